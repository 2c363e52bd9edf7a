"""The catalog snapshot builder on a small Feast repo, lake, Dagster instance and model manifest made here."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog.search import search_features
from catalog.snapshot import build_snapshot, catalog_dir, read_snapshot, write_snapshot
from catalog_support import DAYS, NOW, build_small_catalog

pytestmark = pytest.mark.integration

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield build_small_catalog(tmp_path_factory.mktemp("catalog"), monkeypatch)


def test_definitions_come_from_the_feast_repo(small):
    snapshot, _ = small
    assert [e["name"] for e in snapshot["entities"]] == ["card"]
    assert [v["name"] for v in snapshot["feature_views"]] == ["card_limits", "card_spend"]
    spend = next(v for v in snapshot["feature_views"] if v["name"] == "card_spend")
    assert spend["owner"] == "cards@example.com" and spend["join_keys"] == ["card_id"]
    assert spend["tags"]["team"] == "payments"
    assert [(f["name"], f["dtype"]) for f in spend["features"]] == [("spend_1d", "Float64"), ("txn_count_1d", "Int64"), ("top_country", "String")]
    service = snapshot["feature_services"][0]
    assert service["name"] == "spend_model_v1"
    assert {(f["view"], f["feature"]) for f in service["features"]} == {
        ("card_spend", "spend_1d"), ("card_spend", "txn_count_1d"), ("card_limits", "credit_limit")}


def test_statistics_per_feature(small):
    snapshot, _ = small
    features = {f["id"]: f for f in snapshot["features"]}
    spend = features["card_spend:spend_1d"]["stats"]
    assert spend["count"] == 600 and spend["nulls"] == 60 and spend["null_rate"] == pytest.approx(0.1)
    assert 0 < spend["min"] <= spend["quantiles"]["0.5"] <= spend["max"]
    assert spend["histogram"]["kind"] == "numeric" and sum(spend["histogram"]["counts"]) == 540
    count = features["card_spend:txn_count_1d"]["stats"]
    assert (count["min"], count["max"], count["distinct"]) == (1, 5, 5)
    assert count["histogram"]["edges"] == [1, 2, 3, 4, 5, 6]  # unit bins for a narrow integer range
    country = features["card_spend:top_country"]["stats"]
    assert country["histogram"]["kind"] == "categorical" and country["histogram"]["labels"][0] == "DE"
    assert country["distinct"] == 3 and "mean" not in country
    # A view without data says so instead of failing.
    limits = next(v for v in snapshot["feature_views"] if v["name"] == "card_limits")
    assert limits["offline"]["rows"] == 0 and "no partitions" in limits["offline"]["error"]
    assert features["card_limits:credit_limit"]["stats"] is None


def test_dagster_materializations_checks_and_badges(small):
    snapshot, _ = small
    spend = next(v for v in snapshot["feature_views"] if v["name"] == "card_spend")
    assert [m["partition"] for m in spend["dagster"]["offline"]["partitions"]] == DAYS[::-1]
    assert [m["partition"] for m in spend["dagster"]["online"]["partitions"]] == DAYS[1::-1]
    assert spend["dagster"]["offline"]["partitions"][0]["metadata"]["dagster/row_count"] == 200
    checks = {(c["check"], c["partition"]): c for c in spend["checks"]}
    assert checks[("expectation_suite", DAYS[0])]["passed"] is False
    assert checks[("expectation_suite", DAYS[2])]["passed"] is True
    assert checks[("freshness", None)]["kind"] == "freshness"
    assert all(c["asset"].endswith("card_spend") for c in spend["checks"])
    # The latest suite result passed: validation passes; freshness: offline 2 h old (SLA 24 h),
    # online = newest value of the last published day (2026-11-19 20:00) = 16 h old.
    assert spend["validation"]["status"] == "passing"
    assert spend["freshness"]["offline"]["status"] == "fresh" and spend["freshness"]["offline"]["age_hours"] == 2
    assert spend["freshness"]["online"]["status"] == "fresh" and spend["freshness"]["online"]["age_hours"] == 16
    assert spend["freshness"]["status"] == "fresh"
    limits = next(v for v in snapshot["feature_views"] if v["name"] == "card_limits")
    assert limits["freshness"]["status"] == "unknown" and limits["validation"]["status"] == "none"


def test_freshness_goes_stale_past_the_sla(small, tmp_path, monkeypatch):
    snapshot, settings = small
    later = build_snapshot(settings, definitions={k: snapshot[k] for k in ("entities", "feature_views", "feature_services")},
                           now=NOW + timedelta(hours=12))
    spend = next(v for v in later["feature_views"] if v["name"] == "card_spend")
    assert spend["freshness"]["online"]["status"] == "stale"  # 28 h > 24 h
    assert spend["freshness"]["offline"]["status"] == "fresh"  # 14 h
    assert spend["freshness"]["status"] == "stale"


def test_lineage_and_usage(small):
    snapshot, _ = small
    spend = next(v for v in snapshot["feature_views"] if v["name"] == "card_spend")
    assert spend["pipeline"] == {"name": "card_spend", "module": "pipelines/card_spend.py", "inputs": {"transactions": 1, "users": 0}}
    limits = next(v for v in snapshot["feature_views"] if v["name"] == "card_limits")
    assert "no module" in limits["pipeline"]["error"]
    edges = {(e["source"], e["target"]) for e in snapshot["lineage"]["edges"]}
    assert {("raw:transactions", "pipeline:card_spend"), ("raw:users", "pipeline:card_spend"),
            ("pipeline:card_spend", "feature_view:card_spend"), ("feature_view:card_spend", "feature_service:spend_model_v1"),
            ("feature_view:card_limits", "feature_service:spend_model_v1"), ("feature_service:spend_model_v1", "model:spend_mlp")} <= edges
    features = {f["id"]: f for f in snapshot["features"]}
    assert features["card_spend:spend_1d"]["feature_services"] == ["spend_model_v1"]
    assert features["card_spend:spend_1d"]["models"] == ["spend_mlp"]
    assert features["card_spend:top_country"]["feature_services"] == [] and features["card_spend:top_country"]["models"] == []
    models = {m["name"]: m for m in snapshot["models"]}
    assert "carries no featurestack serving artifact" in models["broken"]["error"]
    spend = models["spend_mlp"]
    assert (spend["version"], spend["promoted"], spend["feature_service"]) == ("1", True, "spend_model_v1")
    [version] = spend["versions"]
    assert (version["aliases"], version["metrics"], version["gate_passed"]) == (["champion"], {"test_roc_auc": 0.8125, "test_pr_auc": 0.25}, None)
    assert re.fullmatch(rf"http://127\.0\.0\.1:5000/#/experiments/\d+/runs/{version['run_id']}", version["run_url"])
    assert spend["run_url"] == version["run_url"]


def test_search(small):
    snapshot, _ = small
    ids = lambda text: [f["id"] for f in search_features(snapshot["features"], text)]  # noqa: E731
    assert ids("spend_1d") == ["card_spend:spend_1d"]
    assert ids("credit@example.com") == ["card_limits:credit_limit"]  # owner
    assert ids("team:payments country") == ["card_spend:top_country"]  # tag + description
    assert set(ids("card")) == {f["id"] for f in snapshot["features"]}  # entity
    assert ids("spend_mlp credit") == ["card_limits:credit_limit"]  # model + name
    assert ids("nothing-like-this") == []


def test_snapshot_round_trips_as_json(small):
    snapshot, settings = small
    path = write_snapshot(snapshot, catalog_dir(settings))
    assert read_snapshot(path) == json.loads(json.dumps(snapshot, default=str))


def test_long_tail_histogram_bins_up_to_p99(tmp_path):
    from catalog.stats import compute_table_stats

    values = [float(i % 100) for i in range(10_000)] + [1e6] * 50  # 0.5 % far out
    path = tmp_path / "t" / "date=2026-11-01"
    path.mkdir(parents=True)
    pq.write_table(pa.table({"x": values}), path / "part-00000.parquet")
    histogram = compute_table_stats(tmp_path / "t", ["x"]).features["x"]["histogram"]
    assert histogram["edges"][-1] < 1000 and histogram["above"] >= 50
    assert sum(histogram["counts"]) + histogram["above"] == 10_050


def test_values_spanning_orders_of_magnitude_get_log_bins(tmp_path):
    from catalog.stats import compute_table_stats

    values = [10 ** (i / 1000) for i in range(6000)]  # 1 .. 1e6, uniform in log
    path = tmp_path / "t" / "date=2026-11-01"
    path.mkdir(parents=True)
    pq.write_table(pa.table({"amount": values}), path / "part-00000.parquet")
    histogram = compute_table_stats(tmp_path / "t", ["amount"]).features["amount"]["histogram"]
    assert histogram["scale"] == "log" and histogram["edges"][0] == pytest.approx(1) and histogram["edges"][-1] == pytest.approx(10 ** 5.999)
    assert max(histogram["counts"]) - min(histogram["counts"]) <= 2  # even in log space
