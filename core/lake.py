"""Facts about the parquet lake (no Spark, no Feast): its raw tables, the `date=YYYY-MM-DD` partition
layout every table uses, row counts, fingerprints."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq

_FOOTER_BYTES = 64 * 1024

# Raw tables: facts land in daily partitions, dimensions as one snapshot.
RAW_PARTITIONED_TABLES = ("transactions", "chargebacks")
RAW_DIMENSION_TABLES = ("users", "merchants")

_PARTITION_PREFIX = "date="
PARTITION_GLOB = f"{_PARTITION_PREFIX}*"  # every partition folder of a table
PARTITION_FILES_GLOB = f"{PARTITION_GLOB}/*.parquet"  # every file of every partition


def partition_dir(table_dir: Path, day: date | str) -> Path:
    """The folder of one day of a table: {table_dir}/date=YYYY-MM-DD (`day` a date or its ISO string)."""
    return table_dir / f"{_PARTITION_PREFIX}{day.isoformat() if isinstance(day, date) else day}"


def partition_date_of(path: Path) -> date:
    """The day of a partition folder (or of a file directly inside one)."""
    folder = path if path.name.startswith(_PARTITION_PREFIX) else path.parent
    return date.fromisoformat(folder.name.removeprefix(_PARTITION_PREFIX))


def partition_dates(table_dir: Path) -> list[date]:
    return sorted(partition_date_of(path) for path in table_dir.glob(PARTITION_GLOB) if path.is_dir())


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
