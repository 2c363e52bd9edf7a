"""The raw tables' expectation suites (validations/suites/, GX 1.x on pandas) and the runner's plain result
(feature tables' suites, built from their views: test_feature_suites.py)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from validations.runner import SuiteParams, validate
from validations.suites import suite_names

pytestmark = pytest.mark.unit

DAY = date(2026, 11, 2)


def test_every_raw_table_has_a_suite_named_after_it_and_nothing_registers_them():
    from pipelines.raw import CONTRACTS

    assert suite_names() == sorted(CONTRACTS)


def test_raw_suite_tolerates_a_few_bad_rows_but_not_a_broken_feed():
    rows = 1000
    frame = pd.DataFrame({
        "txn_id": [f"t{i}" for i in range(rows)], "user_id": np.arange(rows), "merchant_id": np.arange(rows) % 7,
        "amount": np.full(rows, 42.0), "currency": ["EUR"] * rows, "country": ["DE"] * rows, "channel": ["pos"] * rows,
        "event_timestamp": pd.Timestamp("2026-11-02 10:00", tz="UTC") + pd.to_timedelta(np.arange(rows), unit="s"),
    })
    known = {"unknown_user": pd.Index(np.arange(rows)), "unknown_merchant": pd.Index(np.arange(7))}
    few = frame.copy()
    few.loc[:4, "currency"] = "XXX"  # 0.5%: quarantined by the contract, the day goes on
    assert validate("transactions", few, SuiteParams(DAY, rows, known)).success
    many = frame.copy()
    many.loc[:49, "currency"] = "XXX"  # 5%
    result = validate("transactions", many, SuiteParams(DAY, rows, known))
    assert [(o.expectation, o.column, o.unexpected_count) for o in result.failed] == [
        ("expect_column_values_to_be_in_set", "currency", 50)
    ]
    assert {row["currency"] for row in result.failing_sample} == {"XXX"}


def test_unknown_suite_is_a_clear_error():
    with pytest.raises(LookupError, match="no expectation suite for table 'nope'"):
        validate("nope", pd.DataFrame({"a": [1]}))


def _transactions_frame(rows: int = 1000) -> pd.DataFrame:
    return pd.DataFrame({
        "txn_id": [f"t{i}" for i in range(rows)], "user_id": np.arange(rows), "merchant_id": np.arange(rows) % 7,
        "amount": np.full(rows, 42.0), "currency": ["EUR"] * rows, "country": ["DE"] * rows, "channel": ["pos"] * rows,
        "event_timestamp": pd.Timestamp("2026-11-02 10:00", tz="UTC") + pd.to_timedelta(np.arange(rows), unit="s"),
    })


@pytest.mark.parametrize(("change", "expectation", "column"), [
    (lambda f: f.assign(channel=["moon"] * 50 + list(f["channel"][50:])), "expect_column_values_to_be_in_set", "channel"),
    (lambda f: f.assign(user_id=f["user_id"] + 50), "expect_column_values_to_be_in_set", "user_id_in_users"),
])
def test_the_raw_suite_is_derived_from_the_contract_channels_and_references_included(change, expectation, column):
    rows = 1000
    known = {"unknown_user": pd.Index(np.arange(rows)), "unknown_merchant": pd.Index(np.arange(7))}
    result = validate("transactions", change(_transactions_frame(rows)), SuiteParams(DAY, rows, known))
    assert [(o.expectation, o.column, o.unexpected_count) for o in result.failed] == [(expectation, column, 50)]


def test_every_row_level_contract_rule_has_its_expectation_tolerating_the_same_share():
    from pipelines.contracts import CONTRACTS, MAX_BAD_ROW_SHARE, References
    from validations.runner import build_suite

    for table, contract in CONTRACTS.items():
        known = {rule.reason: pd.Index([]) for rule in contract.references}
        suite = build_suite(table, SuiteParams(DAY, 100, known))
        row_level = [e for e in suite.expectations if getattr(e, "mostly", None) is not None and e.mostly < 1]
        columns = {getattr(e, "column", None) or getattr(e, "column_A", None) for e in row_level}
        for rule in contract.rules:
            named = {f"{rule.column}_in_{rule.table}"} if isinstance(rule, References) else set(getattr(rule, "columns", ()) or (rule.column,))
            assert named <= columns, (table, rule)
        assert all(e.mostly == pytest.approx(1 - MAX_BAD_ROW_SHARE) for e in row_level)


def test_one_chargeback_reported_before_its_transaction_is_quarantined_not_a_failed_day():
    rows = 200
    frame = pd.DataFrame({
        "txn_id": [f"t{i}" for i in range(rows)], "user_id": np.arange(rows), "merchant_id": np.arange(rows) % 7,
        "txn_timestamp": pd.Timestamp("2026-11-02 10:00", tz="UTC") + pd.to_timedelta(np.arange(rows), unit="s"),
    })
    frame["reported_timestamp"] = frame["txn_timestamp"] + pd.Timedelta(days=5)
    frame.loc[0, "reported_timestamp"] = frame.loc[0, "txn_timestamp"] - pd.Timedelta(hours=1)  # 0.5% of the day
    result = validate("chargebacks", frame, SuiteParams(DAY, rows, {"unknown_transaction": pd.Index(frame["txn_id"])}))
    assert result.success, result.summary()
    pair = next(o for o in result.outcomes if o.expectation == "expect_column_pair_values_a_to_be_greater_than_b")
    assert pair.unexpected_count == 1
