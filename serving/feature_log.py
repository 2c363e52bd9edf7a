"""The served-feature log's writer: every scored row, as served, into the offline store (core.served_log).

Off the request path: the scoring path hands over each scored batch's arrays as they are (a lock, a list
append: no per-row work, no copy); a background thread turns the buffered batches into one parquet file
per flush in the partition of the day the rows were scored, when `flush_rows` rows are buffered or
`flush_interval_s` after its last flush, whichever comes first, and once more on close. A file is
written under a hidden temporary name and renamed into place, so a reader never sees half a file.

The buffer is bounded: rows not yet on disk (buffered or being written) never exceed `buffer_rows`. A
batch that would exceed it is dropped, never waited for, and counted in
featurestack_served_log_dropped_rows_total{reason="buffer_full"}; so are the rows of a failed write
(reason="write_failed") and rows handed over after close (reason="closed").
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client import CollectorRegistry, Counter

from core.served_log import REQUEST_PREFIX, TIMESTAMP, feature_column, served_dir, served_schema
from core.lake import partition_dir

log = logging.getLogger(__name__)

DROP_REASONS = ("buffer_full", "write_failed", "closed")
_MICROS_PER_DAY = 86_400_000_000
EPOCH_DAY = date(1970, 1, 1)


@dataclass(frozen=True)
class _Batch:
    """One scored batch as handed over: per-row arrays (kept, not copied) and the batch's constants."""

    scored_at_micros: int
    request_ids: np.ndarray
    txn_ids: np.ndarray
    event_micros: np.ndarray
    entities: Mapping[str, np.ndarray]
    features: np.ndarray
    request_features: np.ndarray
    scores: np.ndarray
    model_name: str
    model_version: str
    variant: str
    answered: bool

    @property
    def rows(self) -> int:
        return len(self.scores)


class ServedFeatureLog:
    """Writes scored rows of one feature service's models to {offline}/served/<service>/date=<day>/."""

    def __init__(self, offline_dir: Path, feature_service: str, join_keys: Sequence[str], feature_refs: Sequence[str],
                 request_features: Sequence[str], registry: CollectorRegistry, buffer_rows: int, flush_rows: int,
                 flush_interval_s: float):
        self.directory = served_dir(offline_dir, feature_service)
        self.schema = served_schema(join_keys, feature_refs, request_features)
        self._join_keys = tuple(join_keys)
        self.feature_refs, self.request_features = tuple(feature_refs), tuple(request_features)  # the table's columns
        self._feature_columns = [feature_column(ref) for ref in feature_refs]
        self._request_columns = [f"{REQUEST_PREFIX}{name}" for name in request_features]
        self._buffer_rows, self._flush_rows, self._flush_interval_s = buffer_rows, flush_rows, flush_interval_s
        self._dropped = Counter("featurestack_served_log_dropped_rows_total",
                                "Scored rows the served-feature log did not write: buffer_full (the buffer of rows not yet "
                                "on disk was at its bound), write_failed (the parquet write failed), closed (after shutdown)",
                                ["reason"], registry=registry)
        for reason in DROP_REASONS:  # every series exists from the start, at 0
            self._dropped.labels(reason=reason)
        self._written = Counter("featurestack_served_log_rows_total", "Scored rows the served-feature log wrote to parquet",
                                registry=registry)
        self._registry = registry
        self._wake = threading.Condition()
        self._batches: list[_Batch] = []
        self._buffered = 0  # rows in self._batches
        self._pending = 0  # rows not yet on disk: buffered + being written (what the bound limits)
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="served-feature-log", daemon=True)
        self._thread.start()

    def record(self, *, request_ids: np.ndarray, txn_ids: np.ndarray, event_micros: np.ndarray,
               entities: Mapping[str, np.ndarray], features: np.ndarray, request_features: np.ndarray, scores: np.ndarray,
               model_name: str, model_version: str, variant: str = "champion", answered: bool = True,
               scored_at_micros: int | None = None) -> None:
        """Hand over one scored batch (one entry per row in each array; the arrays must not change afterwards).

        `features`: [rows, feature refs] as served (NaN: missing); `request_features`: [rows, request
        features]; `entities`: a column per join key; `variant`: champion | challenger; `answered`: False
        for a shadow score that was not returned to the client; `scored_at_micros`: when it was scored
        (epoch microseconds; default now), which picks its day partition. Never blocks: at the bound, the
        batch is dropped and counted."""
        rows = len(scores)
        shapes = {"request_ids": len(request_ids), "txn_ids": len(txn_ids), "event_micros": len(event_micros),
                  **{f"entities[{key!r}]": len(entities[key]) for key in self._join_keys if key in entities},
                  "features": len(features), "request_features": len(request_features)}
        if sorted(entities) != sorted(self._join_keys) or any(length != rows for length in shapes.values()) \
                or features.shape[1:] != (len(self._feature_columns),) \
                or request_features.shape[1:] != (len(self._request_columns),):
            raise ValueError(f"served-feature log: a batch of {rows} scores needs the join keys {list(self._join_keys)}, "
                             f"{len(self._feature_columns)} features and {len(self._request_columns)} request features per "
                             f"row; got entities {sorted(entities)}, features {features.shape}, request features "
                             f"{request_features.shape}, lengths {shapes}")
        scored_at = time.time_ns() // 1000 if scored_at_micros is None else scored_at_micros
        batch = _Batch(scored_at, request_ids, txn_ids, event_micros, entities, features, request_features,
                       scores, model_name, model_version, variant, answered)
        with self._wake:
            if self._closing:
                reason = "closed"
            elif self._pending + rows > self._buffer_rows:
                reason = "buffer_full"
            else:
                self._batches.append(batch)
                self._buffered += rows
                self._pending += rows
                if self._buffered >= self._flush_rows:
                    self._wake.notify()
                return
        self._dropped.labels(reason=reason).inc(rows)

    @property
    def pending_rows(self) -> int:
        """Rows handed over and not yet on disk."""
        return self._pending

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what is buffered, stop the thread and the metrics; rows handed over later are dropped."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("served-feature log: %d rows still being written after %.0f s at shutdown", self._pending, timeout_s)
        self._registry.unregister(self._dropped)
        self._registry.unregister(self._written)

    def _run(self) -> None:
        while True:
            with self._wake:
                deadline = time.monotonic() + self._flush_interval_s
                while not self._closing and self._buffered < self._flush_rows and (left := deadline - time.monotonic()) > 0:
                    self._wake.wait(left)
                batches, self._batches, self._buffered = self._batches, [], 0
                closing = self._closing
            if batches:
                self._flush(batches)
            if closing:
                return

    def _flush(self, batches: list[_Batch]) -> None:
        by_day: dict[int, list[_Batch]] = {}
        for batch in batches:
            by_day.setdefault(batch.scored_at_micros // _MICROS_PER_DAY, []).append(batch)
        for day, day_batches in by_day.items():
            rows = sum(batch.rows for batch in day_batches)
            try:
                self._write(EPOCH_DAY + timedelta(days=day), day_batches)
            except Exception:  # a full disk must not stop serving: the rows are counted, the next flush tries again
                log.exception("served-feature log: writing %d rows under %s failed", rows, self.directory)
                self._dropped.labels(reason="write_failed").inc(rows)
            else:
                self._written.inc(rows)
            finally:
                with self._wake:
                    self._pending -= rows

    def _table(self, batches: Sequence[_Batch]) -> pa.Table:
        """Batches -> one table in the log's schema (NaN features are nulls)."""
        def joined(arrays):
            return np.concatenate(arrays) if len(arrays) > 1 else arrays[0]

        counts = [batch.rows for batch in batches]
        features = joined([batch.features for batch in batches])
        request = joined([batch.request_features for batch in batches])
        columns = {
            "request_id": _strings(joined([batch.request_ids for batch in batches])),
            "txn_id": _strings(joined([batch.txn_ids for batch in batches])),
            "event_timestamp": _numbers(joined([batch.event_micros for batch in batches]), TIMESTAMP),
            "scored_at": _numbers(np.repeat(np.array([batch.scored_at_micros for batch in batches], np.int64), counts), TIMESTAMP),
            "model_name": _repeated_strings([batch.model_name for batch in batches], counts),
            "model_version": _repeated_strings([batch.model_version for batch in batches], counts),
            "variant": _repeated_strings([batch.variant for batch in batches], counts),
            "answered": _booleans(np.repeat(np.array([batch.answered for batch in batches], bool), counts)),
            "score": _numbers(joined([batch.scores for batch in batches]), pa.float64()),
            **{key: _numbers(joined([batch.entities[key] for batch in batches]), pa.int64()) for key in self._join_keys},
            **{name: _numbers(features[:, index], pa.float64()) for index, name in enumerate(self._feature_columns)},
            **{name: _numbers(request[:, index], pa.float64()) for index, name in enumerate(self._request_columns)},
        }
        return pa.Table.from_pydict(columns, schema=self.schema)

    def _write(self, day: date, batches: list[_Batch]) -> Path:
        folder = partition_dir(self.directory, day)
        folder.mkdir(parents=True, exist_ok=True)
        # Unique across flushes and across servers writing the same table; ordered by time within a day.
        name = f"part-{batches[0].scored_at_micros % _MICROS_PER_DAY:011d}-{uuid.uuid4().hex[:12]}.parquet"
        staged = folder / f".{name}.tmp"  # hidden and not *.parquet: no reader's glob picks it up
        try:
            with staged.open("wb") as handle:
                pq.write_table(self._table(batches), handle, compression="zstd")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staged, folder / name)
        finally:
            staged.unlink(missing_ok=True)
        return folder / name


# Arrow arrays built from their buffers: pa.array() imports pandas (~30 MB, and seconds of a busy
# server's CPU holding the GIL) on its first call; nothing here needs it.


def _numbers(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """int64/float64-backed Arrow values (timestamps: epoch microseconds); NaN is null."""
    values = np.ascontiguousarray(values, dtype=np.float64 if pa.types.is_floating(type_) else np.int64)
    nulls = np.isnan(values) if values.dtype.kind == "f" else None
    validity = pa.py_buffer(np.packbits(~nulls, bitorder="little")) if nulls is not None and nulls.any() else None
    return pa.Array.from_buffers(type_, len(values), [validity, pa.py_buffer(values)])


def _booleans(values: np.ndarray) -> pa.Array:
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(np.packbits(values, bitorder="little"))])


def _string_buffers(encoded: Sequence[bytes], lengths: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    validity = None if valid is None or valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.string(), len(lengths), [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


def _strings(values: np.ndarray) -> pa.Array:
    """An object array of str or None."""
    items = values.tolist()
    encoded = [b"" if item is None else item.encode() for item in items]
    valid = np.fromiter((item is not None for item in items), bool, len(items))
    return _string_buffers(encoded, np.fromiter(map(len, encoded), np.int64, len(encoded)), valid)


def _repeated_strings(values: Sequence[str], counts: Sequence[int]) -> pa.Array:
    """values[i] repeated counts[i] times (a batch's constants), without a Python object per row."""
    encoded = [value.encode() for value in values]
    return _string_buffers([item * count for item, count in zip(encoded, counts)],
                           np.repeat([len(item) for item in encoded], counts), None)
