"""`featurestack` command line. Heavy imports (Spark, Dagster, Feast) happen inside the commands
that need them, so `featurestack --help` and `status` start fast."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from datetime import date

from featurestack.settings import FEATURE_REPO_DIR, PROJECT_ROOT, load_settings


def _cmd_generate(args: argparse.Namespace) -> int:
    from pipelines.generator import generate

    settings = load_settings()
    start = args.start or settings.start_date
    summary = generate(settings.landing_dir, start, args.days, args.transactions_per_day, seed=args.seed)
    print(f"generated {len(summary.days)} day(s) from {start} into {summary.landing_dir}")
    for table, rows in summary.rows.items():
        print(f"  {table:<13} {rows:>12,} rows")
    print(f"  fraud rate    {summary.fraud_rate:.2%}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from featurestack.platform_run import print_summary, run_platform

    outcome = run_platform(load_settings(), days=args.days, force=args.force)
    print_summary(outcome)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from featurestack.status import print_status

    print_status(load_settings())
    return 0


def _resolved_environment() -> dict[str, str]:
    """The environment a child process (dagster, feast) needs to see what featurestack sees."""
    from featurestack.feast_repo import export_feast_environment
    from featurestack.redis_server import ensure_redis

    settings = load_settings()
    endpoint = ensure_redis(settings.redis_url, settings.state_dir)
    export_feast_environment(settings, endpoint.url)
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    print(f"Redis: {endpoint.describe()}", file=sys.stderr)
    return {**os.environ, "REDIS_URL": endpoint.url, "DAGSTER_HOME": str(settings.dagster_home)}


def _exec(program: str, argv: list[str], env: dict[str, str]) -> int:
    executable = shutil.which(program, path=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
    if executable is None:
        print(f"featurestack: `{program}` not found; install the project first (make install)", file=sys.stderr)
        return 127
    os.execve(executable, [program, *argv], env)
    return 0  # not reached


def _cmd_dev(args: argparse.Namespace) -> int:
    env = _resolved_environment()
    return _exec("dagster", ["dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", args.host, "-p", str(args.port)], env)


def _cmd_feast(args: argparse.Namespace) -> int:
    env = _resolved_environment()
    settings = load_settings()
    return _exec("feast", ["-c", str(FEATURE_REPO_DIR), "-f", str(settings.feature_store_yaml), *args.feast_args], env)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="featurestack", description="featurestack: features from raw payments to Redis, with Dagster, Spark and Feast.")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="write seeded card payments into the landing zone")
    generate.add_argument("--days", type=int, default=3)
    generate.add_argument("--transactions-per-day", type=int, default=20_000)
    generate.add_argument("--seed", type=int, default=7)
    generate.add_argument("--start", type=date.fromisoformat, default=None, help="first day (default FEATURESTACK_START_DATE)")
    generate.set_defaults(handler=_cmd_generate)

    run = commands.add_parser("run", help="run the Dagster asset graph in-process for the landed days")
    run.add_argument("--days", type=int, default=None, help="only the first N landed days (default: all)")
    run.add_argument("--force", action="store_true", help="rerun partitions whose inputs and code did not change")
    run.set_defaults(handler=_cmd_run)

    status = commands.add_parser("status", help="what is in the lake, the registry and Redis")
    status.set_defaults(handler=_cmd_status)

    dev = commands.add_parser("dev", help="the Dagster UI (dagster dev) on this platform's instance")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(handler=_cmd_dev)

    feast = commands.add_parser("feast", help="the feast CLI on feature_repo/ with featurestack's settings")
    feast.add_argument("feast_args", nargs=argparse.REMAINDER)
    feast.set_defaults(handler=_cmd_feast)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
