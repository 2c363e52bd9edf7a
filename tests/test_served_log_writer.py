"""serving.feature_log on its own: the buffer bound and its drop counter, the day partition of the rows'
scoring instant, the flush by rows, on close, and a failed write that leaves serving alone."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import numpy as np
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from core.lake import partition_date_of
from core.served_log import served_dir
from core.settings import PROJECT_ROOT
from serving.feature_log import ServedFeatureLog
from support import wait_until

pytestmark = pytest.mark.unit

REFS = ("user_velocity:txn_count_1h", "merchant_risk:chargeback_rate_30d")
REQUEST = ("amount_log", "amount_to_user_mean_7d")


def open_log(offline_dir, registry, buffer_rows=100, flush_rows=100, flush_interval_s=600.0) -> ServedFeatureLog:
    return ServedFeatureLog(offline_dir, "fraud_detection_v1", ["merchant_id", "user_id"], REFS, REQUEST, registry,
                            buffer_rows, flush_rows, flush_interval_s)


def record(log: ServedFeatureLog, rows: int, first: int = 0, scored_at: datetime | None = None, variant="champion") -> None:
    ids = np.arange(first, first + rows)
    features = np.column_stack([ids.astype(float), ids / 100])
    features[ids % 3 == 0, 1] = np.nan  # a missing value every third row
    log.record(request_ids=np.array([f"r{i // 2}" for i in ids], dtype=object),
               txn_ids=np.array([f"t{i}" if i % 2 else None for i in ids], dtype=object),
               event_micros=1_796_000_000_000_000 + ids, entities={"user_id": ids, "merchant_id": ids % 7},
               features=features, request_features=np.column_stack([ids * 0.5, ids * 0.25]).astype(np.float32),
               scores=(ids / 1000).astype(np.float32), model_name="fraud_mlp", model_version="v1", variant=variant,
               answered=variant != "shadow",
               scored_at_micros=None if scored_at is None else int(scored_at.timestamp()) * 1_000_000 + scored_at.microsecond)


def dropped(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("featurestack_served_log_dropped_rows_total", {"reason": reason})


def files(offline_dir) -> list:
    return sorted(served_dir(offline_dir, "fraud_detection_v1").glob("date=*/*"))


def test_close_writes_every_buffered_row_with_its_values(tmp_path):
    registry = CollectorRegistry()
    log = open_log(tmp_path, registry)
    record(log, 5)
    record(log, 4, first=5, variant="shadow")
    assert files(tmp_path) == []  # below flush_rows and the interval: still buffered
    log.close()
    [written] = files(tmp_path)
    table = pq.read_table(written)
    assert table.schema == log.schema
    rows = table.to_pylist()
    assert [row["user_id"] for row in rows] == list(range(9))
    assert [row["merchant_id"] for row in rows] == [i % 7 for i in range(9)]
    assert [row["request_id"] for row in rows] == [f"r{i // 2}" for i in range(9)]
    assert [row["txn_id"] for row in rows] == [f"t{i}" if i % 2 else None for i in range(9)]
    assert [row["user_velocity__txn_count_1h"] for row in rows] == [float(i) for i in range(9)]
    assert [row["merchant_risk__chargeback_rate_30d"] for row in rows] == [None if i % 3 == 0 else i / 100 for i in range(9)]
    assert [row["request__amount_log"] for row in rows] == [float(np.float32(i * 0.5)) for i in range(9)]
    assert [row["score"] for row in rows] == [float(np.float32(i / 1000)) for i in range(9)]
    assert [(row["variant"], row["answered"]) for row in rows] == [("champion", True)] * 5 + [("shadow", False)] * 4
    assert {(row["model_name"], row["model_version"]) for row in rows} == {("fraud_mlp", "v1")}
    assert [int(row["event_timestamp"].timestamp() * 1_000_000) for row in rows] == [1_796_000_000_000_000 + i for i in range(9)]
    assert registry.get_sample_value("featurestack_served_log_rows_total") is None  # unregistered on close


def test_rows_beyond_the_bound_are_dropped_counted_and_the_rest_flushed_by_rows(tmp_path):
    registry = CollectorRegistry()
    log = open_log(tmp_path, registry, buffer_rows=10, flush_rows=10)
    record(log, 6)
    record(log, 6, first=6)  # 12 rows would exceed the bound: this batch is dropped whole
    assert dropped(registry, "buffer_full") == 6 and log.pending_rows == 6
    record(log, 4, first=12)  # 10 rows buffered: a flush starts without waiting for the interval
    wait_until(lambda: log.pending_rows == 0, seconds=60)
    [written] = files(tmp_path)
    assert pq.read_table(written, columns=["user_id"]).column(0).to_pylist() == [*range(6), *range(12, 16)]
    assert registry.get_sample_value("featurestack_served_log_rows_total") == 10
    assert dropped(registry, "write_failed") == 0 and dropped(registry, "closed") == 0
    log.close()
    assert files(tmp_path) == [written]  # nothing left to write
    record(log, 2)  # after close: counted, not kept
    assert log.pending_rows == 0


def test_rows_go_to_the_partition_of_the_day_they_were_scored(tmp_path):
    log = open_log(tmp_path, CollectorRegistry())
    record(log, 3, scored_at=datetime(2026, 11, 30, 23, 59, 59, 999_999, tzinfo=timezone.utc))
    record(log, 2, first=3, scored_at=datetime(2026, 12, 1, tzinfo=timezone.utc))
    log.close()
    written = files(tmp_path)
    assert [str(partition_date_of(path)) for path in written] == ["2026-11-30", "2026-12-01"]
    assert [pq.read_table(path, columns=["user_id"]).column(0).to_pylist() for path in written] == [[0, 1, 2], [3, 4]]
    assert [pq.read_table(path, columns=["scored_at"]).column(0).to_pylist()[0].date().isoformat() for path in written] \
        == ["2026-11-30", "2026-12-01"]


def test_a_failed_write_is_counted_and_the_log_goes_on(tmp_path):
    blocked = tmp_path / "offline"
    blocked.write_text("a file where the offline store's folder should be")
    registry = CollectorRegistry()
    log = open_log(blocked, registry, flush_rows=3)
    record(log, 3)
    wait_until(lambda: log.pending_rows == 0, seconds=60)
    assert dropped(registry, "write_failed") == 3 and log.pending_rows == 0
    record(log, 2)  # still accepting
    assert log.pending_rows == 2
    log.close()


def test_a_batch_of_the_wrong_shape_is_refused_naming_what_is_wrong(tmp_path):
    log = open_log(tmp_path, CollectorRegistry())
    with pytest.raises(ValueError, match=r"join keys \['merchant_id', 'user_id'\]"):
        log.record(request_ids=np.array(["r"], dtype=object), txn_ids=np.array([None], dtype=object),
                   event_micros=np.zeros(1, np.int64), entities={"user_id": np.zeros(1, np.int64)}, features=np.zeros((1, 2)),
                   request_features=np.zeros((1, 2)), scores=np.zeros(1), model_name="m", model_version="v")
    log.close()
    assert files(tmp_path) == []


def test_writing_never_imports_pandas(tmp_path):
    # pa.array() would (tens of MB and a GIL-holding import inside a busy server): the log builds its
    # Arrow arrays from buffers.
    script = f"""
import sys
import numpy as np
from prometheus_client import CollectorRegistry
from pathlib import Path
from serving.feature_log import ServedFeatureLog
log = ServedFeatureLog(Path({str(tmp_path)!r}), "svc", ["user_id"], ["v:f"], ["r"], CollectorRegistry(), 10, 10, 600)
log.record(request_ids=np.array(["a"], object), txn_ids=np.array([None], object), event_micros=np.zeros(1, np.int64),
           entities={{"user_id": np.zeros(1, np.int64)}}, features=np.full((1, 1), np.nan), request_features=np.zeros((1, 1)),
           scores=np.zeros(1), model_name="m", model_version="v")
log.close()
print(sorted(Path({str(tmp_path)!r}).rglob("*.parquet")) != [], "pandas" in sys.modules)
"""
    completed = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["True", "False"]
