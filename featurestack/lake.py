"""Read-only facts about the parquet lake (no Spark, no Feast): partitions, row counts, fingerprints."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq

_FOOTER_BYTES = 64 * 1024


def partition_dates(table_dir: Path) -> list[date]:
    return sorted(date.fromisoformat(path.name.removeprefix("date=")) for path in table_dir.glob("date=*") if path.is_dir())


def row_count(path: Path) -> int:
    """Rows in a parquet file or in every parquet file under a folder (from footers only)."""
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    return sum(pq.read_metadata(file).num_rows for file in files)


def fingerprint(paths: list[Path]) -> str:
    """Cheap content fingerprint: name, size and the parquet footer (row-group statistics) of each file."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
        for file in files:
            size = file.stat().st_size
            digest.update(f"{file.name}:{size}".encode())
            with file.open("rb") as handle:
                handle.seek(max(0, size - _FOOTER_BYTES))
                digest.update(handle.read())
    return digest.hexdigest()[:16]


def source_fingerprint(directories: list[Path]) -> str:
    digest = hashlib.sha256()
    for directory in directories:
        for file in sorted(directory.rglob("*")):
            # Links are skipped: feature_repo/feature_store.yaml leads to the generated Feast config, not code.
            if file.is_file() and not file.is_symlink() and file.suffix in (".py", ".yaml") and "__pycache__" not in file.parts:
                digest.update(str(file.relative_to(directory.parent)).encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
