"""Replay a landed day through serving and measure training/serving skew.

The day's transactions are scored by the real serving app (/predict, the promoted model), in event
order, against an online store that holds what it held when the day began (every view's offline rows
before that day, published under a replay project of its own). Then, per transaction, the served
feature vector is compared with the point-in-time vector the training set has for it (Feast's
get_historical_features, entity timestamp one microsecond before the transaction).

mode `stream`: serving appends each scored transaction to the event log and the stream processor
    (featurestack stream's code, in a thread) keeps user_velocity fresh. Faster than real time, a
    transaction is scored only once its user's earlier events are visible: consecutive transactions
    of distinct users go in one request, then the replay waits for the processor.
mode `daily`: no stream: the online store stays as the nightly publish left it (the platform before
    the stream existed).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import duckdb
import httpx
import numpy as np
import pandas as pd
import redis
import uvicorn

from core.artifacts import ModelManifest
from core.lake import partition_dates
from core.redis_server import free_port, project_keys
from core.settings import Settings
from core.windows import days_covering
from eventlog.events import encode_record
from eventlog.redis_streams import RedisEventLog
from onlinestore.online_reader import online_store_client
from onlinestore.online_writer import publish_latest, read_offline_latest
from onlinestore.redis_layout import ViewLayout
from serving.variants import champion_model_dir
from streaming.processor import StreamProcessor, consumer_group
from streaming.views import streamed_views
from training.point_in_time import differing, point_in_time_vectors, vector_matrix

TRANSACTION_COLUMNS = ("txn_id", "user_id", "merchant_id", "amount", "event_timestamp")


@dataclass
class ReplayReport:
    day: date
    mode: str
    transactions: int
    mismatched: int  # transactions whose served vector differs from the training vector
    mismatched_by_view: dict[str, int]
    served_roc_auc: float
    training_vector_roc_auc: float
    holdout_roc_auc: float | None  # the model's own holdout metric, when this day was its holdout
    served_pr_auc: float
    training_vector_pr_auc: float
    seconds: float
    examples: list[dict] = field(default_factory=list)
    served: list[dict] = field(default_factory=list, repr=False)  # per transaction: txn_id, model_version and /predict's answer

    @property
    def skew(self) -> float:
        return self.mismatched / self.transactions if self.transactions else 0.0


def _transactions(settings: Settings, days: list[date]) -> pd.DataFrame:
    paths = [str(settings.raw_dir / "transactions" / f"date={day.isoformat()}" / "*.parquet") for day in days]
    frame = duckdb.sql(f"SELECT {', '.join(TRANSACTION_COLUMNS)} FROM read_parquet({paths!r}) ORDER BY event_timestamp, txn_id").df()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame


def _batches(frame: pd.DataFrame, max_rows: int):
    """Consecutive transactions (in event order) scored in one request: a batch ends before a user's
    transaction at a later instant than that user's first one in the batch, so no transaction is scored
    before the events of its own user that precede it are visible, and none sees its own instant."""
    start, first_instant = 0, {}
    users, times = frame["user_id"].to_numpy(), frame["event_timestamp"].to_numpy()
    for row in range(len(frame)):
        seen = first_instant.get(users[row])
        # (Never split one user's instant over two requests: the second would see the first.)
        if (seen is not None and seen != times[row]) or (seen is None and row - start >= max_rows):
            yield frame.iloc[start:row]
            start, first_instant = row, {}
        first_instant.setdefault(users[row], times[row])
    if start < len(frame):
        yield frame.iloc[start:]


def _records(frame: pd.DataFrame) -> list[dict]:
    return [encode_record({"txn_id": t, "user_id": int(u), "merchant_id": int(m), "amount": float(a), "event_timestamp": ts.to_pydatetime()})
            for t, u, m, a, ts in frame[list(TRANSACTION_COLUMNS)].itertuples(index=False)]


def _clear(client: redis.Redis, project: str) -> None:
    keys = list(project_keys(client, project)) + list(client.scan_iter(f"featurestack:{project}:*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start:start + 1000])


def _publish_as_of(settings: Settings, client: redis.Redis, project: str, manifest: dict, day: date) -> None:
    """Every view's latest offline row from before `day`, as the nightly publishes left the store."""
    for view, pin in manifest.feature_views.items():
        table_dir = settings.offline_dir / view
        before = [d.isoformat() for d in partition_dates(table_dir) if d < day]
        if not before:
            continue
        layout = ViewLayout(view, pin.join_keys, pin.features)
        latest = read_offline_latest(table_dir, [key for key, _ in layout.join_keys], dates=before)
        publish_latest(client, project, layout, latest)


def _wait_until_processed(log: RedisEventLog, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(log.lag().values()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the stream processor did not catch up within {timeout_s} s: lag {log.lag()}")
        time.sleep(0.0005)


class _Server:
    """The serving app on uvicorn in a thread, on a free local port."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the serving app did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _training_vectors(settings: Settings, redis_url: str, manifest: ModelManifest, day_frame: pd.DataFrame) -> pd.DataFrame:
    from core.feast_repo import open_store

    return point_in_time_vectors(open_store(settings, redis_url), manifest.feature_service, list(manifest.feature_refs),
                                 day_frame[["txn_id", "user_id", "merchant_id", "amount", "event_timestamp"]], "txn_id")


def _labels(settings: Settings, txn_ids: pd.Series) -> np.ndarray:
    charged = set(duckdb.sql(f"SELECT DISTINCT txn_id FROM read_parquet('{settings.raw_dir / 'chargebacks'}/*/*.parquet')").df()["txn_id"])
    return txn_ids.isin(charged).to_numpy().astype(int)


def _auc(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    from training.model import average_precision, roc_auc

    return float(roc_auc(labels, scores)), float(average_precision(labels, scores))


def replay_day(settings: Settings, redis_url: str, day: date | None = None, mode: str = "stream", limit: int | None = None) -> ReplayReport:
    """Replay `day` (default: the last landed one) in `mode` (stream | daily) and compare served vectors
    with the training set's. `limit`: only the day's first N transactions."""
    from dataclasses import replace

    from serving.app import create_app
    from serving.runner import load_runner
    from training.features import model_inputs

    if mode not in ("stream", "daily"):
        raise ValueError(f"mode must be stream or daily, got {mode!r}")
    started = time.perf_counter()
    model_dir = champion_model_dir(settings)
    manifest = ModelManifest.read(Path(model_dir))
    days = partition_dates(settings.raw_dir / "transactions")
    day = day or days[-1]
    day_frame = _transactions(settings, [day])
    if limit:
        day_frame = day_frame.head(limit)
    project = f"{settings.feast_project}_replay"
    client = redis.Redis.from_url(redis_url)
    _clear(client, project)
    _publish_as_of(settings, client, project, manifest, day)

    replay_settings = replace(settings, feast_project=project, redis_url=redis_url,
                              serving=replace(settings.serving, model_dir=str(model_dir)),
                              # Its log is Redis Streams whatever the deployment's: cleared with the replay's project.
                              stream=replace(settings.stream, log="redis", publish_scored=mode == "stream"))
    stop = threading.Event()
    processor_thread = None
    log = RedisEventLog(client, project, "transactions", "user_id", settings.stream.partitions, consumer_group("user_velocity"))
    if mode == "stream":
        view = streamed_views(settings, redis_url)["user_velocity"]
        processor = StreamProcessor(online_store_client(redis_url, 5.0), project, view.spec, view.layout,
                                    settings.stream.partitions, settings.stream.batch_events, block_ms=1)
        # The processor's windows need the days before: bootstrap the log with them (state, not scoring).
        # A value served on `day` is an entity's newest row within the view's TTL before it, and that row's
        # windows reach the largest window further back.
        reach = view.spec.lookback_days + days_covering(view.layout.ttl or view.spec.largest_window)
        history = [d for d in days if day - timedelta(days=reach) <= d < day]
        if history:
            log.append(_records(_transactions(settings, history)))
        processor_thread = threading.Thread(target=processor.run, args=(stop,), daemon=True)
        processor_thread.start()
        _wait_until_processed(log, timeout_s=600)

    served: list[dict] = []
    try:
        with _Server(create_app(replay_settings)) as url, httpx.Client(base_url=url, timeout=60) as http:
            # Headroom for one user's transactions at a single instant, which always stay together.
            for batch in _batches(day_frame, settings.serving.max_request_rows - 64):
                body = {"transactions": [
                    {"txn_id": t, "user_id": int(u), "merchant_id": int(m), "amount": float(a), "event_timestamp": ts.isoformat()}
                    for t, u, m, a, ts in batch[list(TRANSACTION_COLUMNS)].itertuples(index=False)
                ]}
                reply = http.post("/predict", params={"include_features": "true"}, json=body)
                reply.raise_for_status()
                answer = reply.json()
                served += [{"txn_id": t["txn_id"], "model_version": answer["model_version"], **p}
                           for t, p in zip(body["transactions"], answer["predictions"])]
                if mode == "stream":
                    _wait_until_processed(log)
    finally:
        stop.set()
        if processor_thread:
            processor_thread.join(timeout=30)

    training = _training_vectors(settings, redis_url, manifest, day_frame)
    refs = list(manifest.feature_refs)
    views = list(dict.fromkeys(ref.split(":")[0] for ref in refs))
    served_values = np.array([[np.nan if row["features"][ref] is None else row["features"][ref] for ref in refs] for row in served],
                             dtype=np.float64).reshape(len(served), len(refs))
    expected = vector_matrix(training.loc[[row["txn_id"] for row in served]], refs)
    differs = differing(served_values, expected)
    by_view = {view: int(differs[:, [i for i, ref in enumerate(refs) if ref.startswith(f"{view}:")]].any(axis=1).sum()) for view in views}
    examples = [{"txn_id": served[row]["txn_id"],
                 "differs": {refs[i]: [_plain(served_values[row, i]), _plain(expected[row, i])] for i in np.flatnonzero(differs[row])[:4]}}
                for row in np.flatnonzero(differs.any(axis=1))[:3]]
    labels = _labels(settings, day_frame["txn_id"])
    served_scores = np.array([row["fraud_probability"] for row in served])
    ordered = training.loc[day_frame["txn_id"]]
    values = vector_matrix(ordered, refs)
    missing = np.column_stack([ordered[[r for r in refs if r.startswith(f"{v}:")]].isna().all(axis=1) for v in views])
    runner = load_runner(Path(model_dir), manifest, "cpu")
    training_scores = runner.probabilities(model_inputs(values, missing, ordered["amount"].to_numpy(np.float64),
                                                        refs.index(manifest.user_mean_feature)))
    served_auc, served_pr = _auc(labels, served_scores)
    training_auc, training_pr = _auc(labels, training_scores)
    test_window = manifest.training.training_window["test"] if manifest.training else []
    client.close()
    return ReplayReport(
        day=day, mode=mode, transactions=len(served), mismatched=int(differs.any(axis=1).sum()), mismatched_by_view=by_view,
        served_roc_auc=served_auc, training_vector_roc_auc=training_auc,
        holdout_roc_auc=manifest.training.metrics.get("test_roc_auc") if test_window == [str(day), str(day)] else None,
        served_pr_auc=served_pr, training_vector_pr_auc=training_pr,
        seconds=time.perf_counter() - started, examples=examples, served=served,
    )


def _plain(value):
    return None if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA else float(value)


def print_report(report: ReplayReport) -> None:
    print(f"replayed {report.day} ({report.mode}): {report.transactions:,} transactions in {report.seconds:.1f} s")
    print(f"  served vector differs from the training vector: {report.mismatched:,} ({report.skew:.1%})"
          + "".join(f"; {view} {count:,}" for view, count in report.mismatched_by_view.items()))
    print(f"  ROC AUC served {report.served_roc_auc:.4f}  training vectors {report.training_vector_roc_auc:.4f}"
          + (f"  model holdout {report.holdout_roc_auc:.4f}" if report.holdout_roc_auc is not None else ""))
    print(f"  PR AUC  served {report.served_pr_auc:.4f}  training vectors {report.training_vector_pr_auc:.4f}")
    for example in report.examples:
        print(f"  e.g. {example['txn_id']}: {example['differs']}")
