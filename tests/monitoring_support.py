"""Helpers for the monitoring tests: a served-feature log written from a replay's /predict answers, a
broken copy of a model, and a local webhook receiver."""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from core.artifacts import ModelManifest, artifact_dir
from core.lake import partition_dir
from core.served_log import REQUEST_PREFIX, feature_column, served_partition, served_schema


def write_served_log(settings, manifest: ModelManifest, report) -> Path:
    """The day's served-feature log as serving writes it (core.served_log's schema and layout), from the
    replay's /predict answers (scores and served vectors) and the day's raw transactions."""
    day = report.day
    transactions = duckdb.sql(f"""SELECT txn_id, user_id, merchant_id, event_timestamp
        FROM read_parquet('{partition_dir(settings.raw_dir / "transactions", day)}/*.parquet')""").df().set_index("txn_id")
    rows = transactions.loc[[row["txn_id"] for row in report.served]]
    join_keys = list(dict.fromkeys(key for pin in manifest.feature_views.values() for key, _ in pin.join_keys))
    schema = served_schema(join_keys, manifest.feature_refs, manifest.request_features)
    n = len(report.served)
    columns = {
        "request_id": [uuid.uuid4().hex for _ in range(n)], "txn_id": list(rows.index),
        "event_timestamp": rows["event_timestamp"], "scored_at": [datetime.now(timezone.utc)] * n,
        "model_name": [manifest.model] * n, "model_version": [row["model_version"] for row in report.served],
        "variant": ["champion"] * n, "answered": [True] * n, "score": [row["fraud_probability"] for row in report.served],
        **{key: rows[key].to_numpy(np.int64) for key in join_keys},
        **{feature_column(ref): [row["features"][ref] for row in report.served] for ref in manifest.feature_refs},
        **{f"{REQUEST_PREFIX}{name}": [None] * n for name in manifest.request_features},
    }
    table = pa.table({field.name: pa.array(columns[field.name], type=field.type) for field in schema}, schema=schema)
    folder = served_partition(settings.offline_dir, manifest.feature_service, day)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-00000.parquet")
    return folder


def broken_model(models_dir: Path, model_dir: Path, version: str = "broken") -> Path:
    """A copy of the model whose output layer is negated: it ranks fraud last (a broken model served)."""
    manifest = ModelManifest.read(model_dir)
    target = artifact_dir(models_dir, manifest.feature_service, version)
    shutil.copytree(model_dir, target)
    weights = dict(np.load(target / manifest.weights_file))
    last = max(int(name.split(".")[1]) for name in weights if name.startswith("layers."))
    for name in (f"layers.{last}.weight", f"layers.{last}.bias"):
        weights[name] = -weights[name]
    np.savez(target / manifest.weights_file, **weights)
    state = torch.load(target / manifest.model_file)
    torch.save({name: -tensor if name.startswith(f"layers.{last}.") else tensor for name, tensor in state.items()},
               target / manifest.model_file)
    dataclasses.replace(manifest, version=version).write(target)
    return target
