"""`python -m bench --quick` end to end at a tiny scale: the JSON has its shape and every benchmark
found Feast's output and ours identical (the stream's freshness rows: nothing lost, online rows equal
the windows'). No timing assertions (speed is `make bench`'s business).

The Spark sides (Feast's Spark offline store, the Spark pipelines) are left out with --no-spark to keep
this short; `make bench` runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
ROW_KEYS = {
    "work", "baseline", "baseline_median_s", "ours_median_s", "ratio", "identical",
    "baseline_runs_s", "ours_runs_s", "baseline_peak_mib", "ours_peak_mib", "target", "target_met",
}


def test_bench_quick(tmp_path, redis_url):
    out = tmp_path / "results.json"
    env = {**os.environ, "REDIS_URL": redis_url, "FEATURESTACK_STATE_DIR": str(tmp_path / "state")}
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--scale", "5000", "--no-spark",
         "--state-dir", str(tmp_path / "bench"), "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {"timestamp", "args", "data", "benchmarks", "skipped", "table", "total_s"} <= set(result)
    rows = result["benchmarks"]
    works = [row["work"].split(":")[0] for row in rows]
    assert works[:3] == ["publish latest to Redis", "online read p50", "PIT training set"], works
    assert [w.split(" ")[:2] for w in works[3:]] == [["serving", "1"], ["serving", "batch"], ["served-feature", "log"],
                                                      ["served-feature", "log"], ["stream", "2,000"],
                                                      ["stream", "freshness"], ["stream", "freshness"]], works
    compared, freshness = rows[:8], rows[8:]
    for row in rows:
        assert ROW_KEYS <= set(row), row
        assert row["identical"] is True, row
        assert row["ours_median_s"] > 0 and row["ours_peak_mib"] > 0, row
    for row in compared:
        assert row["baseline_median_s"] > 0 and row["baseline_peak_mib"] > 0, row
    publish = rows[0]
    assert publish["same_redis_bytes"] and publish["feast_reads_identical"]
    assert publish["materialization_intervals_registered"] >= 1
    # Serving: feast serve and featurestack serve answered every request, with the same feature values.
    for row in rows[3:5]:
        assert row["feature_values_identical"] is True and row["feature_check_rows"] >= 1000, row
        assert row["baseline_failures"] == 0 and row["ours_failures"] == 0, row
        assert row["baseline_p99_s"] >= row["baseline_median_s"] > 0 and row["ours_p99_s"] >= row["ours_median_s"] > 0, row
        assert row["baseline_rate_rps"] > 0 and row["ours_rate_rps"] > 0, row
        assert row["target_met"] is None and row["target"] == "report p50/p99 vs feast serve", row
    assert "serving" not in result["skipped"]
    # Serving with the served-feature log on vs off: same answers, every scored row logged, none dropped.
    for row in rows[5:7]:
        assert row["predictions_identical"] and row["rows_logged"] == row["rows_scored"] > 0 and row["rows_dropped"] == 0, row
        assert row["rows_logged_with_log_off"] == 0 and row["baseline_failures"] == 0 and row["ours_failures"] == 0, row
    # Stream: the processor and Feast's push left the same bytes; freshness rows have no Feast side.
    stream = rows[7]
    assert stream["same_redis_bytes"] and stream["redis_keys"] > 0 and stream["rows_pushed"] == 2000, stream
    assert stream["baseline_events_per_s"] > 0 and stream["ours_events_per_s"] > 0, stream
    assert [row["target_rate_events_s"] for row in freshness] == [1000, 5000], freshness
    for row in freshness:
        assert row["baseline_median_s"] is None and row["ratio"] is None, row
        assert row["lost_samples"] == 0 and row["samples"] > 0 and row["ours_p99_s"] >= row["ours_median_s"], row
    assert "identical" in completed.stdout  # the table was printed
