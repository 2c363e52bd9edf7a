"""Each kind of bad landing input, through the real graph (Spark, Dagster, Redis): the bad rows are
quarantined with their reason, the blocking suite check on raw/transactions fails with a readable
message (or the raw asset fails, for schema drift), and Redis keeps its previous good values.

Day 1 is published once for the module; every test corrupts day 2's landing partition, runs day 2
(raw/transactions -> features/user_velocity -> online/user_velocity) and restores the landing file.
The tests at the end run the whole day and publish it. Landing = raw + quarantine is asserted
wherever the day's raw tables are written; where a file fails the partition, nothing is rewritten.
"""

from __future__ import annotations

import shutil
import uuid
from datetime import timedelta

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from core import lake
from core.redis_server import project_keys
from support import delete_project_keys, platform_settings

pytestmark = pytest.mark.integration

DAYS = 2
TRANSACTIONS_PER_DAY = 400
BAD_ROWS = 20  # 5% of the day: quarantined, and more than the 1% the raw suite tolerates
TXN = dg.AssetKey(["raw", "transactions"])
VELOCITY = [TXN, dg.AssetKey(["features", "user_velocity"]), dg.AssetKey(["online", "user_velocity"])]


def _snapshot(url: str, project: str) -> dict[bytes, dict[bytes, bytes]]:
    client = redis.Redis.from_url(url)
    try:
        return {key: client.hgetall(key) for key in project_keys(client, project)}
    finally:
        client.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url, spark):
    from assets.definitions import DAILY_JOB, SETUP_JOB, build_definitions
    from pipelines.generator import generate

    project = f"fs_quar_{uuid.uuid4().hex[:8]}"
    settings = platform_settings(tmp_path_factory.mktemp("quarantine"), project, redis_url)
    try:
        generate(settings.landing_dir, settings.start_date, DAYS, TRANSACTIONS_PER_DAY, seed=21)
        definitions = build_definitions(settings)
        instance = dg.DagsterInstance.ephemeral()
        assert definitions.resolve_job_def(SETUP_JOB).execute_in_process(instance=instance).success
        day1 = settings.start_date.isoformat()
        assert definitions.resolve_job_def(DAILY_JOB).execute_in_process(instance=instance, partition_key=day1).success
        yield {"settings": settings, "definitions": definitions, "instance": instance, "project": project,
               "url": redis_url, "good": _snapshot(redis_url, project)}
    finally:
        delete_project_keys(redis_url, project)


@pytest.fixture
def day2(stack, tmp_path):
    """Day 2's landing partition of transactions, restored after the test (chargebacks too)."""
    settings = stack["settings"]
    day = settings.start_date + timedelta(days=1)
    folders = [settings.landing_dir / table / f"date={day.isoformat()}" for table in ("transactions", "chargebacks")]
    for folder in folders:
        shutil.copytree(folder, tmp_path / folder.parent.name)
    yield day, folders[0]
    for folder in folders:
        shutil.rmtree(folder)
        shutil.copytree(tmp_path / folder.parent.name, folder)


def _assert_landing_is_raw_plus_quarantine(settings, day, table="transactions") -> None:
    partition = f"date={day.isoformat()}"
    assert lake.row_count(settings.landing_dir / table / partition) == (
        lake.row_count(settings.raw_dir / table / partition) + lake.row_count(settings.quarantine_dir / table / partition))


def _partition_files(settings, day, table="transactions") -> dict[str, float]:
    """raw and quarantine files of the day with their modification times (unchanged = not rewritten)."""
    partition = f"date={day.isoformat()}"
    return {str(path): path.stat().st_mtime_ns for root in (settings.raw_dir, settings.quarantine_dir)
            for path in (root / table / partition).glob("*")}


def _step_error(result):
    failure = next(event for event in result.all_events if event.event_type == dg.DagsterEventType.STEP_FAILURE)
    return failure.event_specific_data.error.cause


def _rewrite(folder, change, schema=None):
    from pipelines.generator import TRANSACTIONS_SCHEMA

    files = sorted(folder.glob("*.parquet"))
    frame = pa.concat_tables([pq.read_table(f) for f in files]).to_pandas()
    changed = change(frame)
    for f in files:
        f.unlink()
    pq.write_table(pa.Table.from_pandas(changed, schema=schema or TRANSACTIONS_SCHEMA, preserve_index=False), folder / "part-0.parquet")
    return len(changed)


def _run(stack, day, keys=VELOCITY):
    from assets.definitions import DAILY_JOB

    job = stack["definitions"].resolve_job_def(DAILY_JOB)
    if keys is not None:  # these assets and their checks
        checks = {key for key in job.asset_layer.asset_graph.asset_check_keys if key.asset_key in keys}
        job = job.get_subset(asset_selection=set(keys), asset_check_selection=checks)
    return job.execute_in_process(instance=stack["instance"], partition_key=day.isoformat(), raise_on_error=False)


def _check_evaluations(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


def _materialized(result) -> set[str]:
    return {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}


def _bad_every_20th(column, value):
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        rows = frame.index[:: len(frame) // BAD_ROWS][:BAD_ROWS]
        frame[column] = frame[column].astype(object)
        frame.loc[rows, column] = [value(v) for v in frame.loc[rows, column]]
        return frame
    return change


KINDS = {
    "null_key": (_bad_every_20th("user_id", lambda v: None), "expect_column_values_to_not_be_null on user_id"),
    "negative_or_zero_amount": (_bad_every_20th("amount", lambda v: -abs(v)), "expect_column_values_to_be_between on amount"),
    "absurd_amount": (_bad_every_20th("amount", lambda v: 5e9), "expect_column_values_to_be_between on amount"),
    "unknown_currency": (_bad_every_20th("currency", lambda v: "XXX"), "expect_column_values_to_be_in_set on currency"),
    "unknown_channel": (_bad_every_20th("channel", lambda v: "drone"), "expect_column_values_to_be_in_set on channel"),
    "unknown_user": (_bad_every_20th("user_id", lambda v: 10**12 + v), "expect_column_values_to_be_in_set on user_id_in_users"),
    "unknown_merchant": (_bad_every_20th("merchant_id", lambda v: 10**12 + v), "expect_column_values_to_be_in_set on merchant_id_in_merchants"),
    "timestamp_outside_partition_day": (
        _bad_every_20th("event_timestamp", lambda v: v + pd.Timedelta(days=3)), "expect_column_values_to_be_between on event_timestamp"
    ),
}


@pytest.mark.parametrize("reason", list(KINDS))
def test_bad_rows_are_quarantined_and_block_the_day(stack, day2, reason):
    day, folder = day2
    change, failing = KINDS[reason]
    landing_rows = _rewrite(folder, change)
    result = _run(stack, day)
    settings = stack["settings"]
    quarantined = pq.read_table(settings.quarantine_dir / "transactions" / f"date={day.isoformat()}").to_pandas()
    raw_rows = lake.row_count(settings.raw_dir / "transactions" / f"date={day.isoformat()}")
    assert quarantined["quarantine_reason"].value_counts().to_dict() == {reason: BAD_ROWS}
    assert raw_rows + len(quarantined) == landing_rows  # nothing lost
    evaluation = _check_evaluations(result)["raw/transactions:expectation_suite"]
    assert not evaluation.passed
    assert failing in evaluation.description and "rows (5.00%) break it" in evaluation.description
    assert "offending_rows_sample" in evaluation.metadata
    # Blocking: nothing downstream ran, the run failed, Redis holds day 1's values only.
    assert not result.success and _materialized(result) == {"raw/transactions"}
    assert _snapshot(stack["url"], stack["project"]) == stack["good"]


def test_duplicate_txn_ids_are_quarantined_and_block_the_day(stack, day2):
    day, folder = day2

    def duplicate(frame):
        copies = frame.iloc[:BAD_ROWS].copy()
        copies["amount"] = copies["amount"] + 1.0
        return pd.concat([frame, copies], ignore_index=True)

    landing_rows = _rewrite(folder, duplicate)
    result = _run(stack, day)
    quarantined = pq.read_table(stack["settings"].quarantine_dir / "transactions" / f"date={day.isoformat()}").to_pandas()
    assert quarantined["quarantine_reason"].value_counts().to_dict() == {"duplicate_txn_id": BAD_ROWS}
    assert landing_rows == TRANSACTIONS_PER_DAY + BAD_ROWS
    evaluation = _check_evaluations(result)["raw/transactions:expectation_suite"]
    assert not evaluation.passed and "expect_column_values_to_be_unique on txn_id" in evaluation.description
    _assert_landing_is_raw_plus_quarantine(stack["settings"], day)
    assert not result.success and _materialized(result) == {"raw/transactions"}
    assert _snapshot(stack["url"], stack["project"]) == stack["good"]


@pytest.mark.parametrize(
    ("drift", "message"),
    [
        ("amount_as_string", "column 'amount' has type string, expected double"),
        ("currency_renamed", "column 'currency' is missing (expected string"),
    ],
)
def test_schema_drift_fails_the_raw_asset_naming_the_column(stack, day2, drift, message):
    from pipelines.generator import TRANSACTIONS_SCHEMA

    day, folder = day2
    if drift == "amount_as_string":
        schema = TRANSACTIONS_SCHEMA.set(TRANSACTIONS_SCHEMA.get_field_index("amount"), pa.field("amount", pa.string()))
        _rewrite(folder, lambda f: f.assign(amount=f["amount"].map(str)), schema)
    else:
        index = TRANSACTIONS_SCHEMA.get_field_index("currency")
        _rewrite(folder, lambda f: f.rename(columns={"currency": "currency_code"}), TRANSACTIONS_SCHEMA.set(index, pa.field("currency_code", pa.string())))
    before = _partition_files(stack["settings"], day)
    result = _run(stack, day)
    assert not result.success and _materialized(result) == set()
    cause = _step_error(result)
    assert cause.cls_name == "SchemaDriftError" and message in cause.message
    assert _partition_files(stack["settings"], day) == before  # nothing half-written: raw and quarantine untouched
    assert _snapshot(stack["url"], stack["project"]) == stack["good"]


def test_a_second_file_lacking_a_column_fails_the_partition_naming_the_file(stack, day2):
    from pipelines.generator import TRANSACTIONS_SCHEMA

    day, folder = day2
    _rewrite(folder, lambda frame: frame)
    whole = pq.read_table(folder / "part-0.parquet")
    pq.write_table(whole.slice(0, 300), folder / "part-0.parquet")
    pq.write_table(whole.slice(300).drop_columns(["currency"]), folder / "part-1.parquet")
    assert whole.schema == TRANSACTIONS_SCHEMA
    before = _partition_files(stack["settings"], day)
    result = _run(stack, day)
    assert not result.success and _materialized(result) == set()
    cause = _step_error(result)
    assert cause.cls_name == "SchemaDriftError"
    assert f"transactions[{day}]: landing file part-1.parquet: column 'currency' is missing (expected string" in cause.message
    assert _partition_files(stack["settings"], day) == before
    assert _snapshot(stack["url"], stack["project"]) == stack["good"]


def _scramble_pages(data: bytes) -> bytes:
    """Garbles the column chunks, keeping the footer (schema and row counts stay readable)."""
    middle = bytes((byte * 7 + 13) % 256 for byte in data[100 : len(data) // 2])
    return data[:100] + middle + data[len(data) // 2 :]


@pytest.mark.parametrize("damage", ["zero_bytes", "bad_footer", "garbled_pages"])
def test_an_unreadable_only_file_fails_naming_table_partition_and_file_without_a_jvm_trace(stack, day2, damage):
    day, folder = day2
    _rewrite(folder, lambda frame: frame)
    only = folder / "part-0.parquet"
    data = only.read_bytes()
    only.write_bytes({"zero_bytes": b"", "bad_footer": data[:-9], "garbled_pages": _scramble_pages(data)}[damage])
    before = _partition_files(stack["settings"], day)
    result = _run(stack, day)
    assert not result.success and _materialized(result) == set()
    cause = _step_error(result)
    assert cause.cls_name == "UnreadableLandingFileError"
    assert cause.message.startswith(f"pipelines.raw.UnreadableLandingFileError: transactions[{day}]: landing file part-0.parquet is unreadable")
    assert "at org.apache" not in cause.message and "Py4J" not in cause.message and "UNABLE_TO_INFER_SCHEMA" not in cause.message
    assert len(cause.message.strip().splitlines()) == 1  # one line, no trace
    assert _partition_files(stack["settings"], day) == before
    assert _snapshot(stack["url"], stack["project"]) == stack["good"]


def test_a_feature_suite_failure_blocks_the_publish(stack, day2):
    """Contract-valid input that makes a feature table implausible: a burst of 300 payments of one
    user within an hour. raw/transactions passes; features/user_velocity breaks its distribution
    bound; online/user_velocity is not published."""
    day, folder = day2

    def burst(frame):
        start = pd.Timestamp(day.isoformat(), tz="UTC") + pd.Timedelta(hours=12)
        extra = pd.DataFrame([frame.iloc[0].to_dict()] * 300)
        extra["txn_id"] = [f"burst-{i}" for i in range(300)]
        extra["event_timestamp"] = [start + pd.Timedelta(seconds=10 * i) for i in range(300)]
        return pd.concat([frame, extra], ignore_index=True)

    _rewrite(folder, burst)
    result = _run(stack, day)
    evaluations = _check_evaluations(result)
    assert evaluations["raw/transactions:expectation_suite"].passed
    features = evaluations["features/user_velocity:expectation_suite"]
    assert not features.passed and "expect_column_mean_to_be_between on txn_count_1h" in features.description
    assert not result.success
    assert _materialized(result) == {"raw/transactions", "features/user_velocity"}
    _assert_landing_is_raw_plus_quarantine(stack["settings"], day)
    assert _snapshot(stack["url"], stack["project"]) == stack["good"]


def test_a_clean_day_passes_every_check_and_publishes(stack, day2):
    day, _ = day2
    result = _run(stack, day, keys=None)
    assert result.success
    evaluations = _check_evaluations(result)
    assert evaluations and all(e.passed for e in evaluations.values()), {k: e.description for k, e in evaluations.items() if not e.passed}
    assert evaluations["online/user_velocity:online_offline_consistency"].metadata["mismatch_rate"].value == 0.0
    for table in ("transactions", "chargebacks"):
        _assert_landing_is_raw_plus_quarantine(stack["settings"], day, table)
    assert _snapshot(stack["url"], stack["project"]) != stack["good"]


def _rewrite_chargebacks(settings, day, change) -> None:
    from pipelines.generator import CHARGEBACKS_SCHEMA

    folder = settings.landing_dir / "chargebacks" / f"date={day.isoformat()}"
    files = sorted(folder.glob("*.parquet"))
    frame = change(pa.concat_tables([pq.read_table(f) for f in files]).to_pandas())
    for f in files:
        f.unlink()
    pq.write_table(pa.Table.from_pandas(frame, schema=CHARGEBACKS_SCHEMA, preserve_index=False), folder / "part-0.parquet")


@pytest.mark.parametrize(("reason", "change"), [
    ("reported_before_transaction",
     lambda f: f.assign(reported_timestamp=[f["txn_timestamp"][0] - pd.Timedelta(hours=1), *f["reported_timestamp"][1:]])),
    ("unknown_transaction", lambda f: f.assign(txn_id=["no-such-transaction", *f["txn_id"][1:]])),
])
def test_a_bad_chargeback_is_quarantined_and_blocks_only_what_reads_chargebacks(stack, day2, reason, change):
    """One bad label is quarantined with its reason. At this scale (8 labels a day) it is 12.5% of the
    day, a broken feed for the chargebacks suite (its 1-in-200 tolerance is in
    test_validations_suites): merchant_risk, which reads chargebacks, is not published, while
    user_velocity, which does not, is published in the same run."""
    day, _ = day2
    settings = stack["settings"]
    _rewrite_chargebacks(settings, day, change)
    result = _run(stack, day, keys=None)
    assert not result.success
    evaluation = _check_evaluations(result)["raw/chargebacks:expectation_suite"]
    assert not evaluation.passed and "rows (12.50%) break it" in evaluation.description
    assert _reasons(settings, "chargebacks", day) == {reason: 1}
    published = _materialized(result)
    assert {"raw/transactions", "raw/chargebacks", "features/user_velocity", "online/user_velocity"} <= published
    assert not {"features/merchant_risk", "online/merchant_risk"} & published
    for table in ("transactions", "chargebacks"):
        _assert_landing_is_raw_plus_quarantine(settings, day, table)


def _reasons(settings, table, day) -> dict[str, int]:
    frame = pq.read_table(settings.quarantine_dir / table / f"date={day.isoformat()}").to_pandas()
    return frame["quarantine_reason"].value_counts().to_dict()
