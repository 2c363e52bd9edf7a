"""The one place that reads the environment. Every other module asks `get_settings()`.

Defaults make a fresh clone run locally: data and state live under the git-ignored `.state/` folder
of the checkout, Spark runs in local mode, the offline store is Feast's DuckDB store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

from core.model_registry import parse_model_uri

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FEATURE_REPO_DIR = PROJECT_ROOT / "feature_repo"
# Where a fresh clone keeps its state and lake (FEATURESTACK_STATE_DIR / _DATA_DIR unset).
DEFAULT_STATE_DIR = PROJECT_ROOT / ".state"
DEFAULT_DATA_DIR = DEFAULT_STATE_DIR / "data"
OFFLINE_PROFILES = ("local", "spark")
# How the online writer writes: auto (a new key is RESTOREd from a ready-made hash, an existing one gets
# HSET) or hset (HSET only: for a Redis-compatible server whose RESTORE payloads differ, or to compare).
REDIS_WRITE_MODES = ("auto", "hset")
REDIS_TYPES = ("redis", "redis_cluster")  # redis_cluster: REDIS_URL names one node, the others are discovered
# How serving splits traffic between the champion and the challenger: none (champion only), canary (a
# share of the entities to the challenger) or shadow (both score every row, the champion answers).
ROUTING_MODES = ("none", "canary", "shadow")


def offline_store_dir(data_dir: Path) -> Path:
    """The offline store of a lake: one folder of daily parquet partitions per feature table."""
    return data_dir / "offline"


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _parse_spark_conf(raw: str) -> dict[str, str]:
    """FEATURESTACK_SPARK_CONF='k1=v1,k2=v2' -> {'k1': 'v1', 'k2': 'v2'}."""
    conf: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"FEATURESTACK_SPARK_CONF: expected key=value, got {item!r}")
        conf[key.strip()] = value.strip()
    return conf


@dataclass(frozen=True)
class ServingSettings:
    model_dir: str = ""  # a fixed model folder (no registry, no reload: benchmarks); empty: `model_uri`
    # The registered model and alias serving follows (the fraud_detection_v1 service's `model` tag).
    model_uri: str = "models:/fraud_mlp@champion"
    routing: str = "none"  # one of ROUTING_MODES
    challenger_alias: str = "challenger"  # loaded beside the champion when routing is canary or shadow
    canary_share: float = 0.1  # share of the entities routed to the challenger under canary routing
    # The request entity whose hash routes a row (canary); empty: the first join key of the champion's
    # first feature view (user_id for fraud_detection_v1: a user always meets the same model).
    routing_key: str = ""
    reload_interval_s: float = 10.0  # how often the registry is asked where the aliases point; 0: never
    model_cache_dir: str = ""  # registered versions fetched for serving; empty: $STATE/mlflow/model-cache
    feature_service: str = "fraud_detection_v1"
    max_batch_rows: int = 512  # rows per model call: concurrent requests are merged up to this
    max_wait_ms: float = 2.0  # how long the first request of a batch waits for company
    max_request_rows: int = 4096  # candidates in one /predict request
    max_pending_rows: int = 50_000  # queued rows beyond this are refused with 503 (bounded memory)
    redis_timeout_s: float = 0.5  # a Redis that does not answer in time is a 503, never a hang
    device: str = "auto"  # auto: CUDA (torch) when a GPU is present, else the model on numpy (no torch import); cpu; cuda
    max_body_bytes: int = 4 * 1024 * 1024  # larger request bodies get 413 before they are read
    api_key: str = field(default="", repr=False)  # bearer token for /predict and /features; empty: open
    # The served-feature log (serving/feature_log.py): every scored row into the offline store, written
    # in the background. Rows beyond the buffer bound (rows not yet on disk) are dropped and counted.
    served_log: bool = True
    served_log_buffer_rows: int = 100_000
    served_log_flush_rows: int = 20_000  # a flush starts at this many buffered rows ...
    served_log_flush_interval_s: float = 60.0  # ... or this long after the last one, whichever comes first
    # What the serving machine (its GPU) costs per hour: with a price, /metrics estimates the cost per
    # 1,000 predictions. 0: no estimate.
    gpu_hourly_price_usd: float = 0.0

    def __post_init__(self) -> None:
        # A request larger than the queue bound would be refused as "overloaded" forever.
        if self.max_pending_rows < self.max_request_rows:
            raise ValueError(
                f"FEATURESTACK_SERVING_MAX_PENDING_ROWS ({self.max_pending_rows}) must be at least "
                f"FEATURESTACK_SERVING_MAX_REQUEST_ROWS ({self.max_request_rows})"
            )
        if not 0 < self.served_log_flush_rows <= self.served_log_buffer_rows:
            raise ValueError(
                f"FEATURESTACK_SERVED_LOG_FLUSH_ROWS ({self.served_log_flush_rows}) must be positive and at most "
                f"FEATURESTACK_SERVED_LOG_BUFFER_ROWS ({self.served_log_buffer_rows})"
            )
        if not self.served_log_flush_interval_s > 0:
            raise ValueError(f"FEATURESTACK_SERVED_LOG_FLUSH_INTERVAL_S must be positive, got {self.served_log_flush_interval_s}")
        if not self.gpu_hourly_price_usd >= 0:
            raise ValueError(f"FEATURESTACK_GPU_HOURLY_PRICE_USD must be a price of 0 or more, got {self.gpu_hourly_price_usd}")
        if self.routing not in ROUTING_MODES:
            raise ValueError(f"FEATURESTACK_SERVING_ROUTING must be one of {ROUTING_MODES}, got {self.routing!r}")
        if self.routing != "none" and self.model_dir:
            raise ValueError(f"FEATURESTACK_SERVING_ROUTING={self.routing} needs the model registry: FEATURESTACK_MODEL_DIR "
                             "serves one fixed model")
        if not 0.0 <= self.canary_share <= 1.0:
            raise ValueError(f"FEATURESTACK_SERVING_CANARY_SHARE must be within [0, 1], got {self.canary_share}")
        if self.reload_interval_s < 0:
            raise ValueError(f"FEATURESTACK_SERVING_RELOAD_INTERVAL_S must be >= 0, got {self.reload_interval_s}")
        if not self.model_dir:
            parse_model_uri(self.model_uri)  # a clear error now rather than at the first registry call


@dataclass(frozen=True)
class StreamSettings:
    log: str = "redis"  # the event log: redis (Redis Streams in the online store's Redis) or nats (JetStream)
    nats_url: str = "nats://127.0.0.1:4222"
    partitions: int = 4  # event log partitions (by entity hash): the most processors that share the work
    batch_events: int = 1000  # events read per call
    block_ms: int = 5  # how long a read waits for events when none are queued
    publish_scored: bool = False  # serving appends each transaction it scored to the event log

    def __post_init__(self) -> None:
        if self.log not in ("redis", "nats"):
            raise ValueError(f"FEATURESTACK_STREAM_LOG must be redis or nats, got {self.log!r}")
        if self.partitions < 1:
            raise ValueError(f"FEATURESTACK_STREAM_PARTITIONS must be at least 1, got {self.partitions}")


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    data_dir: Path
    redis_url: str
    feast_project: str
    offline_profile: str
    spark_master: str
    spark_driver_memory: str
    spark_shuffle_partitions: int
    spark_conf: dict[str, str] = field(default_factory=dict)
    # First daily partition; None (the default): the first landed day, and the demo's days end yesterday (UTC).
    start_date: date | None = None
    webhook_url: str = ""
    # Feast SQL registry (multi-user), e.g. postgresql+psycopg://user:pw@host:5432/feast_registry; empty: a file
    registry_db_url: str = ""
    redis_type: str = "redis"  # or redis_cluster (REDIS_URL then names one node of the cluster)
    redis_write_mode: str = "auto"  # one of REDIS_WRITE_MODES
    # MLflow tracking and model registry; empty: the embedded sqlite store under the state folder
    mlflow_tracking_uri: str = ""
    # The Feast repo the platform parses and applies (entities, data sources, one module per feature view)
    feature_repo_dir: Path = FEATURE_REPO_DIR
    # The tracking UI as a browser reaches it (`make mlflow-ui`): the catalog links each model's run there
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    serving: ServingSettings = field(default_factory=lambda: ServingSettings())
    stream: StreamSettings = field(default_factory=lambda: StreamSettings())

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "raw"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def offline_dir(self) -> Path:
        return offline_store_dir(self.data_dir)

    @property
    def registry_path(self) -> Path:
        # One registry per profile: the sources differ in type (FileSource for DuckDB, SparkSource for Spark).
        return self.state_dir / "feast" / f"registry_{self.feast_project}_{self.offline_profile}.db"

    @property
    def dagster_home(self) -> Path:
        return self.state_dir / "dagster"

    @property
    def models_dir(self) -> Path:
        return self.state_dir / "models"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.state_dir / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifact_root(self) -> Path:
        """Where runs' artifacts go for a new experiment (the store keeps only their location)."""
        return self.state_dir / "mlflow" / "artifacts"

    @property
    def model_cache_dir(self) -> Path:
        """Registered versions fetched for serving (core.model_registry.ModelRegistry.fetch)."""
        if self.serving.model_cache_dir:
            return Path(self.serving.model_cache_dir)
        return self.state_dir / "mlflow" / "model-cache"

    @property
    def feature_store_yaml(self) -> Path:
        """The profile's template in feature_repo/ (its ${...} placeholders are filled from these settings)."""
        if self.registry_db_url:
            return self.feature_repo_dir / "feature_store.sql-registry.yaml"
        return self.feature_repo_dir / f"feature_store.{self.offline_profile}.yaml"

    @property
    def feast_config_path(self) -> Path:
        """The filled-in Feast config the platform writes; feature_repo/feature_store.yaml links to the
        default state's one, so plain `feast` and `FeatureStore(repo_path="feature_repo")` see it."""
        return self.state_dir / "feast" / "feature_store.yaml"


def _registry_db_url(profile: str) -> str:
    url = _env("FEATURESTACK_REGISTRY_DB_URL", "")
    if url and profile != "local":
        raise ValueError("FEATURESTACK_REGISTRY_DB_URL (SQL registry) is supported with FEATURESTACK_OFFLINE_PROFILE=local only")
    return url


def _redis_type() -> str:
    redis_type = _env("REDIS_TYPE", "redis")
    if redis_type not in REDIS_TYPES:
        raise ValueError(f"REDIS_TYPE must be one of {REDIS_TYPES}, got {redis_type!r}")
    return redis_type


def _redis_write_mode() -> str:
    mode = _env("FEATURESTACK_REDIS_WRITE_MODE", "auto")
    if mode not in REDIS_WRITE_MODES:
        raise ValueError(f"FEATURESTACK_REDIS_WRITE_MODE must be one of {REDIS_WRITE_MODES}, got {mode!r}")
    return mode


def _flag(name: str, default: str) -> bool:
    value = _env(name, default).lower()
    if value not in ("1", "true", "yes", "0", "false", "no"):
        raise ValueError(f"{name} must be 1/true/yes or 0/false/no, got {value!r}")
    return value in ("1", "true", "yes")


def load_settings() -> Settings:
    """Read settings from the environment (uncached: tests build their own)."""
    state_dir = Path(_env("FEATURESTACK_STATE_DIR", str(DEFAULT_STATE_DIR))).resolve()
    profile = _env("FEATURESTACK_OFFLINE_PROFILE", "local")
    if profile not in OFFLINE_PROFILES:
        raise ValueError(f"FEATURESTACK_OFFLINE_PROFILE must be one of {OFFLINE_PROFILES}, got {profile!r}")
    return Settings(
        state_dir=state_dir,
        data_dir=Path(_env("FEATURESTACK_DATA_DIR", str(state_dir / "data"))).resolve(),
        redis_url=_env("REDIS_URL", ""),
        feast_project=_env("FEATURESTACK_FEAST_PROJECT", "featurestack"),
        offline_profile=profile,
        spark_master=_env("SPARK_MASTER", "local[*]"),
        spark_driver_memory=_env("SPARK_DRIVER_MEMORY", "2g"),
        spark_shuffle_partitions=int(_env("SPARK_SHUFFLE_PARTITIONS", "4")),
        spark_conf=_parse_spark_conf(_env("FEATURESTACK_SPARK_CONF", "")),
        start_date=date.fromisoformat(start) if (start := _env("FEATURESTACK_START_DATE", "")) else None,
        webhook_url=_env("FEATURESTACK_ALERT_WEBHOOK_URL", ""),
        registry_db_url=_registry_db_url(profile),
        redis_type=_redis_type(),
        redis_write_mode=_redis_write_mode(),
        mlflow_tracking_uri=_env("MLFLOW_TRACKING_URI", ""),
        feature_repo_dir=Path(_env("FEATURESTACK_FEATURE_REPO", str(FEATURE_REPO_DIR))).resolve(),
        mlflow_ui_url=_env("MLFLOW_UI_URL", "http://127.0.0.1:5000").rstrip("/"),
        serving=ServingSettings(
            model_dir=_env("FEATURESTACK_MODEL_DIR", ""),
            model_uri=_env("FEATURESTACK_SERVING_MODEL_URI", "models:/fraud_mlp@champion"),
            routing=_env("FEATURESTACK_SERVING_ROUTING", "none"),
            challenger_alias=_env("FEATURESTACK_SERVING_CHALLENGER_ALIAS", "challenger"),
            canary_share=float(_env("FEATURESTACK_SERVING_CANARY_SHARE", "0.1")),
            routing_key=_env("FEATURESTACK_SERVING_ROUTING_KEY", ""),
            reload_interval_s=float(_env("FEATURESTACK_SERVING_RELOAD_INTERVAL_S", "10")),
            model_cache_dir=_env("FEATURESTACK_MODEL_CACHE_DIR", ""),
            feature_service=_env("FEATURESTACK_SERVING_FEATURE_SERVICE", "fraud_detection_v1"),
            max_batch_rows=int(_env("FEATURESTACK_SERVING_MAX_BATCH_ROWS", "512")),
            max_wait_ms=float(_env("FEATURESTACK_SERVING_MAX_WAIT_MS", "2")),
            max_request_rows=int(_env("FEATURESTACK_SERVING_MAX_REQUEST_ROWS", "4096")),
            max_pending_rows=int(_env("FEATURESTACK_SERVING_MAX_PENDING_ROWS", "50000")),
            redis_timeout_s=float(_env("FEATURESTACK_SERVING_REDIS_TIMEOUT_S", "0.5")),
            device=_env("FEATURESTACK_SERVING_DEVICE", "auto"),
            max_body_bytes=int(_env("FEATURESTACK_SERVING_MAX_BODY_BYTES", str(4 * 1024 * 1024))),
            api_key=_env("FEATURESTACK_API_KEY", ""),
            served_log=_flag("FEATURESTACK_SERVED_LOG", "1"),
            served_log_buffer_rows=int(_env("FEATURESTACK_SERVED_LOG_BUFFER_ROWS", "100000")),
            served_log_flush_rows=int(_env("FEATURESTACK_SERVED_LOG_FLUSH_ROWS", "20000")),
            served_log_flush_interval_s=float(_env("FEATURESTACK_SERVED_LOG_FLUSH_INTERVAL_S", "60")),
            gpu_hourly_price_usd=float(_env("FEATURESTACK_GPU_HOURLY_PRICE_USD", "0")),
        ),
        stream=StreamSettings(
            log=_env("FEATURESTACK_STREAM_LOG", "redis"),
            nats_url=_env("NATS_URL", "nats://127.0.0.1:4222"),
            partitions=int(_env("FEATURESTACK_STREAM_PARTITIONS", "4")),
            batch_events=int(_env("FEATURESTACK_STREAM_BATCH_EVENTS", "1000")),
            block_ms=int(_env("FEATURESTACK_STREAM_BLOCK_MS", "5")),
            publish_scored=_env("FEATURESTACK_SERVING_PUBLISH_EVENTS", "0") in ("1", "true", "yes"),
        ),
    )


def utc_today() -> date:
    return datetime.now(timezone.utc).date()


def demo_start_date(days: int) -> date:
    """The first of `days` generated days that end yesterday (UTC), the last complete day: what a fresh
    demo shows as fresh."""
    return utc_today() - timedelta(days=days)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
