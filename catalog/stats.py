"""Statistics per feature over a view's offline parquet, computed with DuckDB.

Three scans of the table whatever its width: rows and newest event per date partition; the
aggregates of every feature (count, nulls, NaNs, min, max, mean, std, quantiles from a reservoir
sample, HyperLogLog distinct count); the histograms of every feature (bins fixed by the second scan:
equal width, unit bins for narrow integer ranges, [min, p99] plus a tail count for a long tail,
log-spaced for values spanning orders of magnitude). Non-numeric features get their top values.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.lake import PARTITION_FILES_GLOB

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
DEFAULT_BINS = 20
RESERVOIR = 65_536
TOP_VALUES = 10
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
            "UBIGINT", "FLOAT", "DOUBLE", "REAL", "DECIMAL")
_INTEGER = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")


@dataclass(frozen=True)
class TableStats:
    rows: int
    seconds: float
    features: dict[str, dict[str, Any]]
    partitions: list[dict[str, Any]]  # per date partition: rows, newest event timestamp
    columns: dict[str, str]           # column -> DuckDB type (what the parquet really holds)


def parquet_glob(table_dir: Path) -> str:
    return str(table_dir / PARTITION_FILES_GLOB)


def has_partitions(table_dir: Path) -> bool:
    return table_dir.is_dir() and any(table_dir.glob(PARTITION_FILES_GLOB))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _is_numeric(duck_type: str) -> bool:
    return duck_type.upper().startswith(_NUMERIC)


def _is_integer(duck_type: str) -> bool:
    return duck_type.upper() in _INTEGER


def _bins(lo: float, hi: float, integer: bool, bins: int) -> tuple[float, float, int]:
    """(start, width, count) of equal-width bins over [lo, hi]; unit bins for narrow integer ranges."""
    if hi == lo:
        return lo, 1.0, 1
    if integer and hi - lo + 1 <= bins:
        return lo, 1.0, int(hi - lo) + 1
    width = (hi - lo) / bins
    if integer:
        width = math.ceil((hi - lo + 1) / bins)
        return lo, float(width), math.ceil((hi - lo + 1) / width)
    return lo, width, bins


def compute_table_stats(
    table_dir: Path,
    features: list[str],
    *,
    timestamp_column: str = "event_timestamp",
    bins: int = DEFAULT_BINS,
    threads: int | None = None,
) -> TableStats:
    """Stats of `features` over every date partition under `table_dir` (hive layout date=YYYY-MM-DD)."""
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect(":memory:")
    try:
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        source = f"read_parquet({parquet_glob(table_dir)!r}, hive_partitioning = true, hive_types = {{'date': VARCHAR}})"
        con.execute(f"CREATE TEMP VIEW t AS SELECT * FROM {source}")
        columns = {row[0]: row[1] for row in con.execute("DESCRIBE t").fetchall()}
        present = [name for name in features if name in columns]

        ts = _quote(timestamp_column) if timestamp_column in columns else None
        partition_rows = con.execute(
            f"SELECT date, count(*), {f'max({ts})' if ts else 'NULL'} FROM t GROUP BY date ORDER BY date"
        ).fetchall()
        partitions = [
            {"date": day, "rows": rows, "newest_event": newest.isoformat() if newest is not None else None}
            for day, rows, newest in partition_rows
        ]
        total = sum(p["rows"] for p in partitions)

        numeric = [name for name in present if _is_numeric(columns[name])]
        other = [name for name in present if name not in numeric]
        result: dict[str, dict[str, Any]] = {}

        # Scan 1: aggregates of every feature at once.
        select: list[str] = []
        for name in present:
            q = _quote(name)
            select += [f"count({q})", f"approx_count_distinct({q})"]
            if name in numeric:
                floating = not _is_integer(columns[name])
                # NaN is not a value: keep it out of min/max/mean/quantiles (counted apart).
                value = f"(CASE WHEN NOT isnan({q}) THEN {q} END)" if floating else q
                quantiles = ", ".join(str(p) for p in QUANTILES)
                select += [f"min({value})::DOUBLE", f"max({value})::DOUBLE", f"avg({value})", f"stddev_samp({value})",
                           # A uniform sample of RESERVOIR values per feature: bounded memory, ~5x faster
                           # than t-digest here, rank error ~0.2 % (shown as approximate).
                           f"reservoir_quantile({value}, [{quantiles}], {RESERVOIR})",
                           f"count(*) FILTER (WHERE isnan({q}))" if floating else "0"]
        row = con.execute(f"SELECT {', '.join(select)} FROM t").fetchone() if select else ()
        position = 0
        for name in present:
            non_null, distinct = row[position], row[position + 1]
            position += 2
            stats: dict[str, Any] = {
                "type": columns[name],
                "count": total,
                "nulls": total - non_null,
                "null_rate": (total - non_null) / total if total else None,
                "distinct": int(distinct),
                "distinct_is_approximate": True,
            }
            if name in numeric:
                lo, hi, mean, std, quantiles, nans = row[position:position + 6]
                position += 6
                stats.update(min=_finite(lo), max=_finite(hi), mean=_finite(mean), std=_finite(std), nans=int(nans),
                             quantiles={str(p): _finite(float(v)) if v is not None else None
                                        for p, v in zip(QUANTILES, quantiles or [None] * len(QUANTILES))},
                             quantiles_are_approximate=non_null > RESERVOIR)
            result[name] = stats

        # Scan 2: histograms of every numeric feature at once (bin index per value, counted).
        hist_select, layouts = [], {}
        for name in numeric:
            lo, hi = result[name].get("min"), result[name].get("max")
            if lo is None or hi is None:
                continue
            p99 = (result[name].get("quantiles") or {}).get("0.99")
            median = (result[name].get("quantiles") or {}).get("0.5")
            if lo > 0 and hi / lo >= 1000 and median is not None and median - lo < (hi - lo) / bins:
                # Heavy right tail over orders of magnitude (amounts): log-spaced bins.
                start, width, count = math.log(lo), (math.log(hi) - math.log(lo)) / bins, bins
                layouts[name] = (start, width, count, "log")
                hist_select.append(f"histogram(floor((ln({_quote(name)}) - {start!r}) * {1 / width!r}))")
                continue
            if p99 is not None and lo < p99 < hi and hi - p99 > p99 - lo:
                # A long tail (max further above p99 than p99 is above min) would squash every bar but
                # one: bin [min, p99] and count what lies above it apart.
                hi = p99
            start, width, count = _bins(lo, hi, _is_integer(columns[name]), bins)
            layouts[name] = (start, width, count, "linear")
            # Bin index as a DOUBLE (no clamping or casting per row: clamped below; NaN has its own key).
            hist_select.append(f"histogram(floor(({_quote(name)} - {start!r}) * {1 / width!r}))")
        if hist_select:
            hist_row = con.execute(f"SELECT {', '.join(hist_select)} FROM t").fetchone()
            for name, counts in zip(layouts, hist_row):
                start, width, count, scale = layouts[name]
                edges = [start + width * i for i in range(count + 1)]
                if scale == "log":
                    edges = [math.exp(edge) for edge in edges]
                binned, above = [0] * count, 0
                clipped = edges[-1] < result[name]["max"] and scale == "linear"
                for key, n in (counts or {}).items():
                    if key is None or not math.isfinite(key):
                        continue
                    if clipped and key >= count:
                        above += int(n)
                    else:
                        binned[min(max(int(key), 0), count - 1)] += int(n)  # the max lands on the last edge
                result[name]["histogram"] = {
                    "kind": "numeric",
                    "scale": scale,  # 'log': log-spaced edges (values spanning orders of magnitude)
                    "edges": edges,
                    "counts": binned,
                    "above": above,  # values above the last edge (long tail beyond p99), 0 if none
                }
        for name in other:
            top = con.execute(
                f"SELECT {_quote(name)}::VARCHAR AS v, count(*) AS n FROM t GROUP BY v ORDER BY n DESC, v LIMIT {TOP_VALUES}"
            ).fetchall()
            result[name]["histogram"] = {"kind": "categorical", "labels": ["null" if v is None else str(v) for v, _ in top], "counts": [n for _, n in top]}
        for name in features:
            if name not in result:
                result[name] = {"missing": True, "error": f"column {name!r} not in {table_dir}"}
        return TableStats(rows=total, seconds=round(time.perf_counter() - started, 3), features=result,
                          partitions=partitions, columns=columns)
    finally:
        con.close()
