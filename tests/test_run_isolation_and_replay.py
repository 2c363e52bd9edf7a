"""`featurestack run` isolates failures, and `featurestack quarantine replay` releases rows whose
referenced row arrived late, through the real platform run (Spark, Dagster, Feast registry, Redis)
on two generated days under the test's own Feast project. Landing = raw + quarantine is asserted
after every run."""

from __future__ import annotations

import shutil
import uuid
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from core import lake
from support import delete_project_keys, platform_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAYS = 2
TRANSACTIONS_PER_DAY = 1000


@pytest.fixture(scope="module")
def platform_state(tmp_path_factory, redis_url, spark):
    from core.settings import load_settings
    from pipelines.generator import generate

    project = f"fs_iso_{uuid.uuid4().hex[:8]}"
    with platform_environment(tmp_path_factory.mktemp("isolation"), project, redis_url):
        try:
            settings = load_settings()
            generate(settings.landing_dir, settings.start_date, DAYS, TRANSACTIONS_PER_DAY, seed=5)
            yield settings
        finally:
            delete_project_keys(redis_url, project)


def _days(settings):
    return [settings.start_date + timedelta(days=offset) for offset in range(DAYS)]


def _rows(path) -> int:
    return lake.row_count(path) if path.exists() else 0


def _assert_nothing_lost(settings) -> None:
    for table in ("transactions", "chargebacks"):
        for day in _days(settings):
            partition = f"date={day.isoformat()}"
            landing = _rows(settings.landing_dir / table / partition)
            assert landing == _rows(settings.raw_dir / table / partition) + _rows(settings.quarantine_dir / table / partition), (table, day)


def _reasons(settings, table: str, day) -> dict[str, int]:
    path = settings.quarantine_dir / table / f"date={day.isoformat()}"
    if not path.exists():
        return {}
    counts = pc.value_counts(pq.read_table(path, columns=["quarantine_reason"]).column(0))
    return {item["values"].as_py(): item["counts"].as_py() for item in counts}


def test_a_failing_input_blocks_only_what_depends_on_it_and_later_days_still_run(platform_state, tmp_path):
    from featurestack.platform_run import run_platform

    settings = platform_state
    day1, day2 = _days(settings)
    broken_file = next((settings.landing_dir / "chargebacks" / f"date={day1.isoformat()}").glob("*.parquet"))
    shutil.copy(broken_file, tmp_path / "backup.parquet")
    table = pq.read_table(broken_file)
    index = table.schema.get_field_index("txn_timestamp")
    pq.write_table(table.set_column(index, "txn_timestamp", pc.cast(table["txn_timestamp"], pa.string())), broken_file)

    outcome = run_platform(settings)

    [failure] = outcome.failed
    assert failure.startswith(f"raw/chargebacks[{day1}] failed: ")
    assert f"chargebacks[{day1}]: landing file {broken_file.name}: column 'txn_timestamp' has type string, expected timestamp" in failure
    blocked = {line.split(":", 1)[0] for line in outcome.blocked}
    # merchant_risk reads 30 days of chargebacks: both days blocked; user_velocity reads no chargebacks.
    assert blocked == {f"{asset}[{day}]" for asset in ("features/merchant_risk", "online/merchant_risk") for day in (day1, day2)}
    assert all(f"(raw/chargebacks[{day1}] failed: " in line for line in outcome.blocked)  # each names the root cause
    assert any(line.startswith(f"features/merchant_risk[{day2}]: blocked, needs raw/chargebacks[{day1}]") for line in outcome.blocked)
    for day in (day1, day2):
        assert (settings.offline_dir / "user_velocity" / f"date={day.isoformat()}").exists()
        assert not (settings.offline_dir / "merchant_risk" / f"date={day.isoformat()}").exists()
    assert (settings.raw_dir / "chargebacks" / f"date={day2.isoformat()}").exists()  # the later day's input is whole
    _assert_nothing_lost_except(settings, ("chargebacks", day1))

    shutil.copy(tmp_path / "backup.parquet", broken_file)
    repaired = run_platform(settings)
    assert repaired.failed == [] and repaired.blocked == []
    assert all((settings.offline_dir / "merchant_risk" / f"date={day.isoformat()}").exists() for day in (day1, day2))
    _assert_nothing_lost(settings)


def _assert_nothing_lost_except(settings, failed: tuple[str, object]) -> None:
    """Every partition written is whole; the failed one was not written at all."""
    table, day = failed
    partition = f"date={day.isoformat()}"
    assert not (settings.raw_dir / table / partition).exists() and not (settings.quarantine_dir / table / partition).exists()
    for other_table in ("transactions", "chargebacks"):
        for other_day in _days(settings):
            if (other_table, other_day) != failed:
                part = f"date={other_day.isoformat()}"
                assert _rows(settings.landing_dir / other_table / part) == (
                    _rows(settings.raw_dir / other_table / part) + _rows(settings.quarantine_dir / other_table / part))


def test_rows_of_a_late_user_are_quarantined_then_replayed_once_the_user_lands(platform_state, capsys):
    from featurestack.cli import main
    from featurestack.platform_run import run_platform

    settings = platform_state
    landing = pa.concat_tables([pq.read_table(settings.landing_dir / "transactions" / f"date={day.isoformat()}") for day in _days(settings)])
    per_user = pc.value_counts(landing["user_id"])
    counts = {item["values"].as_py(): item["counts"].as_py() for item in per_user}
    late_user = min(counts, key=lambda user: (counts[user], user))  # fewest payments: well below the 1% a suite tolerates
    users_file = settings.landing_dir / "users" / "users.parquet"
    users = pq.read_table(users_file)
    pq.write_table(users.filter(pc.not_equal(users["user_id"], late_user)), users_file)

    outcome = run_platform(settings)
    assert outcome.failed == [] and outcome.blocked == []
    quarantined = sum(_reasons(settings, "transactions", day).get("unknown_user", 0) for day in _days(settings))
    assert quarantined == counts[late_user]
    _assert_nothing_lost(settings)

    pq.write_table(users, users_file)  # the user's row arrives late
    capsys.readouterr()
    assert main(["quarantine", "replay"]) == 0
    printed = capsys.readouterr().out
    for day in _days(settings):
        held = _reasons(settings, "transactions", day)  # (reasons after the replay)
        assert "unknown_user" not in held
    assert "row(s) released into raw" in printed and "unknown_user" in printed
    raw = pa.concat_tables([pq.read_table(settings.raw_dir / "transactions" / f"date={day.isoformat()}") for day in _days(settings)])
    assert pc.sum(pc.equal(raw["user_id"], late_user)).as_py() == counts[late_user]
    _assert_nothing_lost(settings)
