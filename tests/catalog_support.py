"""The small catalog of the catalog tests: a Feast repo, a lake, a Dagster instance and registered model
versions (a real MLflow sqlite store) made under a folder (shared by test_catalog_snapshot/_web/_cli)."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog.definitions import parse_feast_repo
from catalog.snapshot import build_snapshot
from core.artifacts import ModelManifest, ViewPin, artifact_dir
from core.model_registry import CHAMPION, ModelRegistry
from core.settings import load_settings

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
DAYS = ["2026-11-18", "2026-11-19", "2026-11-20"]

REPO = '''
from datetime import timedelta
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_format import ParquetFormat
from feast.types import Float64, Int64, String

card = Entity(name="card", join_keys=["card_id"], value_type=ValueType.INT64, description="A payment card.", owner="cards@example.com")

card_spend = FeatureView(
    name="card_spend", entities=[card], ttl=timedelta(days=2), online=True, owner="cards@example.com",
    description="Daily spend of a card.", tags={{"pipeline": "card_spend", "freshness_sla_hours": "24", "team": "payments"}},
    source=FileSource(name="card_spend_source", path="{offline}/card_spend", file_format=ParquetFormat(), timestamp_field="event_timestamp"),
    schema=[
        Field(name="spend_1d", dtype=Float64, description="Amount spent on the day."),
        Field(name="txn_count_1d", dtype=Int64, description="Transactions on the day."),
        Field(name="top_country", dtype=String, description="Most frequent country of the day."),
    ],
)

card_limits = FeatureView(
    name="card_limits", entities=[card], ttl=timedelta(days=30), online=True, owner="credit@example.com",
    description="Credit limit of a card.", tags={{"pipeline": "card_limits", "freshness_sla_hours": "48"}},
    source=FileSource(name="card_limits_source", path="{offline}/card_limits", file_format=ParquetFormat(), timestamp_field="event_timestamp"),
    schema=[Field(name="credit_limit", dtype=Float64, description="Credit limit in EUR.")],
)

spend_model_v1 = FeatureService(name="spend_model_v1", features=[card_spend[["spend_1d", "txn_count_1d"]], card_limits],
                                owner="ml@example.com", description="Spend model.")
'''

PIPELINE = '''
from pipelines.registry import FeaturePipeline

def build(tables, day):
    return tables["transactions"]

PIPELINE = FeaturePipeline(name="card_spend", inputs={"transactions": 1, "users": 0}, build=build)
'''


def write_offline_partition(table_dir: Path, day: str, rows: int, *, newest: datetime, seed: int) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    offsets = rng.integers(0, 3600 * 12, rows)
    offsets[-1] = 0  # the newest value is exactly `newest`
    stamps = [newest - timedelta(seconds=int(s)) for s in offsets]
    spend = rng.gamma(2.0, 30.0, rows)
    spend[::10] = np.nan  # 10 % missing
    table = pa.table({
        "card_id": pa.array(np.arange(rows), pa.int64()),
        "event_timestamp": pa.array(stamps, pa.timestamp("us", tz="UTC")),
        "spend_1d": pa.array(spend, pa.float64(), from_pandas=True),
        "txn_count_1d": pa.array(rng.integers(1, 6, rows), pa.int64()),
        "top_country": pa.array(rng.choice(["DE", "FR", "NL"], rows, p=[0.6, 0.3, 0.1])),
    })
    path = table_dir / f"date={day}"
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path / "part-00000.parquet")


def report_dagster_events(dagster_home: Path) -> None:
    import dagster as dg

    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text("")
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    offline, online = dg.AssetKey(["features", "card_spend"]), dg.AssetKey(["online", "card_spend"])
    for day in DAYS:
        instance.report_runless_asset_event(dg.AssetMaterialization(offline, partition=day, metadata={"dagster/row_count": 200}))
    for day in DAYS[:2]:  # the last day is not published online yet
        instance.report_runless_asset_event(dg.AssetMaterialization(online, partition=day, metadata={"written": 200}))
    # An expectation suite that failed on the first day and passed after; a freshness check that passed.
    for day, passed in zip(DAYS, (False, True, True)):
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=offline, check_name="expectation_suite", passed=passed, partition=day,
            metadata={"failed_expectations": 0 if passed else 2}, description="GX suite card_spend",
        ))
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(asset_key=offline, check_name="freshness", passed=True))
    # Someone else's asset: never shown.
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(asset_key=dg.AssetKey(["raw", "x"]), check_name="other", passed=False))
    instance.dispose()


def register_version(settings, name: str, artifact: Path | None) -> str:
    """A registered version of `name` in the settings' tracking store whose model carries the files of
    `artifact` (a serving artifact folder) as its extra files, or none; returns the version."""
    import mlflow
    import torch

    registry = ModelRegistry(settings.tracking_uri, settings.model_cache_dir)
    experiment = registry.client.get_experiment_by_name("catalog-test")
    location = settings.mlflow_artifact_root / "catalog-test"
    location.mkdir(parents=True, exist_ok=True)
    experiment_id = experiment.experiment_id if experiment else registry.client.create_experiment("catalog-test", artifact_location=location.as_uri())
    with registry.fluent():
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_metrics({"test_roc_auc": 0.8125, "test_pr_auc": 0.25})
            mlflow.pytorch.log_model(torch.nn.Linear(3, 1), name="model", serialization_format="pickle", pip_requirements=["torch"],
                                     extra_files=[str(path) for path in sorted(artifact.iterdir())] if artifact else None)
        return str(mlflow.register_model(f"runs:/{run.info.run_id}/model", name).version)


def build_small_catalog(root: Path, monkeypatch: pytest.MonkeyPatch, *, now: datetime = NOW) -> tuple[dict, object]:
    """A Feast repo, a lake, a Dagster instance and registered models under `root` (spend_mlp, champion v1;
    broken, whose version carries no serving artifact); returns (snapshot, settings)."""
    state = root / "state"
    monkeypatch.setenv("FEATURESTACK_STATE_DIR", str(state))
    monkeypatch.delenv("FEATURESTACK_DATA_DIR", raising=False)
    settings = load_settings()
    repo = root / "repo"
    repo.mkdir()
    (repo / "definitions.py").write_text(textwrap.dedent(REPO.format(offline=settings.offline_dir)))
    pipelines = root / "pipelines"
    pipelines.mkdir()
    (pipelines / "card_spend.py").write_text(PIPELINE)
    for i, day in enumerate(DAYS):
        newest = datetime.fromisoformat(day).replace(tzinfo=timezone.utc) + timedelta(hours=20)
        write_offline_partition(settings.offline_dir / "card_spend", day, 200, newest=min(newest, now - timedelta(hours=2)), seed=i)
    report_dagster_events(settings.dagster_home)
    pins = {view: ViewPin(fingerprint="hand-made", join_keys=(("card_id", "INT64"),), features=())
            for view in ("card_spend", "card_limits")}
    manifest = ModelManifest(model="spend_mlp", version="v1", project="p", feature_service="spend_model_v1",
                             feature_refs=("card_spend:spend_1d", "card_spend:txn_count_1d", "card_limits:credit_limit"),
                             request_features=(), user_mean_feature="card_spend:spend_1d", n_inputs=3, feature_views=pins)
    model_dir = artifact_dir(settings.models_dir, manifest.feature_service, manifest.version)
    model_dir.mkdir(parents=True)
    manifest.write(model_dir)
    ModelRegistry(settings.tracking_uri, settings.model_cache_dir).set_alias(
        "spend_mlp", CHAMPION, register_version(settings, "spend_mlp", model_dir))
    register_version(settings, "broken", None)
    snapshot = build_snapshot(settings, definitions=parse_feast_repo(repo), pipelines_dir=pipelines, now=now)
    return snapshot, settings
