"""A feature table's expectation suite is built from its feature view: the schema gives every column's
presence, type and not-null rule, the key and the partition day; the view's module
(feature_repo/feature_views/<view>.py) adds what only it knows."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from core.feast_repo import view_module
from core.settings import FEATURE_REPO_DIR
from validations.runner import SuiteParams, validate

pytestmark = pytest.mark.integration  # the suite is built from the Feast declaration

DAY = date(2026, 11, 2)


@pytest.fixture(scope="module")
def velocity_suite(declared_views):
    from validations.feature_suite import feature_view_suite

    return feature_view_suite(declared_views["user_velocity"], {"user_id": "INT64"}, view_module(FEATURE_REPO_DIR, "user_velocity"))


def _velocity(rows: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    count = rng.integers(1, 4, rows)
    amount = rng.uniform(5, 200, rows)
    return pd.DataFrame({
        "user_id": np.arange(rows, dtype=np.int64),
        "event_timestamp": pd.Timestamp("2026-11-02", tz="UTC") + pd.to_timedelta(rng.integers(0, 86_399, rows), unit="s"),
        "txn_count_1h": count, "txn_count_24h": count + 1, "txn_count_7d": count + 5,
        "amount_sum_1h": amount, "amount_sum_24h": amount * 2, "amount_sum_7d": amount * 5, "amount_mean_7d": amount * 5 / (count + 5),
        "distinct_merchants_24h": count, "seconds_since_prev_txn": np.where(count > 1, 60.0, np.nan),
    })


def test_a_good_partition_passes(velocity_suite):
    result = validate(velocity_suite, _velocity(), SuiteParams(DAY, previous_rows=190), partition=DAY.isoformat())
    assert result.success, result.summary()
    assert result.failed == [] and result.failing_sample == []
    assert {o.expectation for o in result.outcomes} >= {
        "expect_compound_columns_to_be_unique", "expect_column_values_to_not_be_null", "expect_column_mean_to_be_between",
        "expect_column_quantile_values_to_be_between", "expect_table_row_count_to_be_between",
    }


def test_a_broken_partition_names_each_failure_with_observed_values_and_offending_rows(velocity_suite):
    frame = _velocity()
    frame.loc[3, "txn_count_24h"] = 0  # below its 1h window and below 1
    frame.loc[7, "user_id"] = frame.loc[8, "user_id"]
    frame.loc[7, "event_timestamp"] = frame.loc[8, "event_timestamp"]  # a duplicate key
    result = validate(velocity_suite, frame, SuiteParams(DAY, previous_rows=1000))
    assert not result.success
    failed = {(o.expectation, o.column) for o in result.failed}
    assert ("expect_column_values_to_be_between", "txn_count_24h") in failed
    assert ("expect_column_pair_values_a_to_be_greater_than_b", "txn_count_24h,txn_count_1h") in failed
    assert ("expect_compound_columns_to_be_unique", "user_id,event_timestamp") in failed
    row_count = next(o for o in result.failed if o.expectation == "expect_table_row_count_to_be_between")
    assert row_count.observed == 200 and row_count.kwargs["min_value"] == 500  # half the previous partition
    between = next(o for o in result.failed if o.column == "txn_count_24h" and o.expectation.endswith("be_between"))
    assert between.unexpected_count == 1 and between.sample[0]["user_id"] == 3
    assert "expect_column_values_to_be_between on txn_count_24h" in result.summary()
    assert any(row["user_id"] == frame.loc[8, "user_id"] for row in result.failing_sample)


def test_distribution_bounds_catch_a_broken_window(velocity_suite):
    frame = _velocity()
    frame["txn_count_1h"] = frame["txn_count_24h"] * 20  # e.g. a window in minutes instead of hours
    frame["txn_count_7d"] = frame["txn_count_1h"] * 2
    frame["txn_count_24h"] = frame["txn_count_1h"]
    result = validate(velocity_suite, frame, SuiteParams(DAY))
    assert [(o.expectation, o.column) for o in result.failed] == [("expect_column_mean_to_be_between", "txn_count_1h")]
    assert result.failed[0].observed > 10


def test_not_null_and_type_expectations_come_from_the_schema(velocity_suite):
    frame = _velocity()
    frame.loc[5, "amount_mean_7d"] = np.nan  # not tagged nullable
    frame["distinct_merchants_24h"] = frame["distinct_merchants_24h"].astype("float64")  # an Int64 feature
    result = validate(velocity_suite, frame, SuiteParams(DAY))
    failed = {(o.expectation, o.column) for o in result.failed}
    assert ("expect_column_values_to_not_be_null", "amount_mean_7d") in failed
    assert ("expect_column_values_to_be_in_type_list", "distinct_merchants_24h") in failed
    # seconds_since_prev_txn is tagged nullable (null for a user's first transaction in 7 days): its nulls pass.
    assert all(o.success for o in result.outcomes if o.column == "seconds_since_prev_txn")


def test_every_declared_view_has_its_module_named_after_it(declared_views):
    from core.windows import is_windowed
    from pipelines.registry import FeaturePipeline

    for name, view in declared_views.items():
        module = view_module(FEATURE_REPO_DIR, name)
        assert getattr(module, name).name == name
        assert is_windowed(view) or isinstance(module.PIPELINE, FeaturePipeline)


def test_a_view_without_a_module_is_a_clear_error(tmp_path):
    with pytest.raises(LookupError, match="feature view 'nope': no module feature_views/nope.py"):
        view_module(tmp_path, "nope")
