"""`featurestack` command line. Heavy imports (Spark, Dagster, Feast) happen inside the commands
that need them, so `featurestack --help` and `status` start fast."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from datetime import date
from pathlib import Path

from core.settings import FEATURE_REPO_DIR, PROJECT_ROOT, load_settings


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


def _cmd_train(args: argparse.Namespace) -> int:
    from core.redis_server import ensure_redis
    from training.train import train

    settings = load_settings()
    result = train(settings, ensure_redis(settings.redis_url, settings.state_dir).url, args.feature_service, epochs=args.epochs)
    manifest, training = result.manifest, result.manifest.training
    print(f"trained {manifest.model} on {manifest.feature_service} ({len(manifest.feature_refs)} features) on {training.trained_on}")
    print(f"  window   train {training.training_window['train']}  test {training.training_window['test']}")
    print(f"  rows     {training.rows}")
    for name, value in training.metrics.items():
        print(f"  {name:<16} {value:.4f}")
    print(f"  artifact {result.model_dir}")
    floor = training.metric_floor["test_roc_auc"]
    if not result.promoted:
        print(f"  NOT promoted: test_roc_auc below the floor {floor} of {manifest.feature_service}; serving keeps the previous model")
        return 1
    print(f"  promoted: serving uses it (test_roc_auc >= floor {floor})")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from serving.app import create_app

    print(f"featurestack serving on http://{args.host}:{args.port} (/predict, /features, /readyz, /metrics)", file=sys.stderr)
    uvicorn.run(create_app(load_settings()), host=args.host, port=args.port, log_level="warning")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from featurestack.status import print_status

    print_status(load_settings())
    return 0


def _resolved_environment() -> dict[str, str]:
    """The environment a child process (dagster, feast) needs to see what featurestack sees."""
    from core.feast_repo import export_feast_environment
    from core.redis_server import ensure_redis

    settings = load_settings()
    endpoint = ensure_redis(settings.redis_url, settings.state_dir)
    export_feast_environment(settings, endpoint.url)
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    (settings.dagster_home / "dagster.yaml").touch()
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


def _catalog_snapshot(args: argparse.Namespace) -> dict:
    """The saved snapshot (<state>/catalog/catalog.json, or --snapshot FILE) unless --rebuild or none yet."""
    from catalog.snapshot import SNAPSHOT_FILE, catalog_dir, publish, read_snapshot

    settings = load_settings()
    path = args.snapshot or catalog_dir(settings) / SNAPSHOT_FILE
    if args.snapshot or (path.exists() and not args.rebuild):
        snapshot = read_snapshot(path)
        print(f"catalog snapshot {path} (built {snapshot['generated_at'][:19]} UTC; --rebuild to refresh)", file=sys.stderr)
        return snapshot
    print("building the catalog snapshot (Feast definitions, Dagster status, DuckDB statistics)...", file=sys.stderr)
    snapshot, path = publish(settings)
    print(f"catalog snapshot {path} built in {snapshot['build_seconds']:.1f} s", file=sys.stderr)
    return snapshot


def _cmd_catalog(args: argparse.Namespace) -> int:
    if args.catalog_command == "build":
        args.rebuild = True
        snapshot = _catalog_snapshot(args)
        print(f"{len(snapshot['features'])} features in {len(snapshot['feature_views'])} views; "
              f"open {load_settings().state_dir / 'catalog' / 'index.html'}")
        return 0
    if args.catalog_command == "search":
        return _cmd_catalog_search(args)
    from catalog.snapshot import publish
    from catalog.web import CatalogState, serve

    snapshot = _catalog_snapshot(args)
    rebuild = None if args.snapshot else (lambda: publish(load_settings())[0])
    print(f"featurestack catalog on http://{args.host}:{args.port}/ (JSON API under /api/)", file=sys.stderr)
    serve(CatalogState(snapshot, rebuild), host=args.host, port=args.port)
    return 0


def _cmd_catalog_search(args: argparse.Namespace) -> int:
    import json

    from catalog.search import search_features

    snapshot = _catalog_snapshot(args)
    matches = search_features(snapshot["features"], " ".join(args.text))
    if args.json:
        print(json.dumps([{k: v for k, v in f.items() if k != "stats"} for f in matches], indent=1))
        return 0 if matches else 1
    if not matches:
        print(f"no feature matches {' '.join(args.text)!r}", file=sys.stderr)
        return 1
    width = max(len(f["id"]) for f in matches)
    for feature in matches:
        stats = feature.get("stats") or {}
        nulls = f"{stats['null_rate']:.1%} null" if stats.get("null_rate") is not None else "no data"
        print(f"{feature['id']:<{width}}  {feature['dtype']:<8} {feature['owner']:<28} freshness={feature['freshness']:<8} "
              f"validation={feature['validation']:<8} {nulls:<10} {feature['description']}")
    return 0


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

    train = commands.add_parser("train", help="train the fraud model on a feature service (Feast SDK, PIT-correct)")
    train.add_argument("--feature-service", default="fraud_detection_v1")
    train.add_argument("--epochs", type=int, default=10)
    train.set_defaults(handler=_cmd_train)

    serve = commands.add_parser("serve", help="the online prediction endpoint (FastAPI on uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(handler=_cmd_serve)

    status = commands.add_parser("status", help="what is in the lake, the registry and Redis")
    status.set_defaults(handler=_cmd_status)

    dev = commands.add_parser("dev", help="the Dagster UI (dagster dev) on this platform's instance")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(handler=_cmd_dev)

    catalog = commands.add_parser("catalog", help="the feature catalog web page + JSON API; `catalog search TEXT`, `catalog build`")
    catalog.add_argument("--host", default="127.0.0.1")
    catalog.add_argument("--port", type=int, default=8080)
    catalog.add_argument("--snapshot", type=Path, default=None, help="serve/search this snapshot file (e.g. the catalog asset's)")
    catalog.add_argument("--rebuild", action="store_true", help="rebuild the snapshot instead of using the saved one")
    catalog.set_defaults(handler=_cmd_catalog, catalog_command=None)
    catalog_commands = catalog.add_subparsers(dest="catalog_command")
    search = catalog_commands.add_parser("search", help="features matching every word (name, description, owner, tag, entity)")
    search.add_argument("text", nargs="+")
    search.add_argument("--json", action="store_true", help="print the matches as JSON")
    # SUPPRESS: options given before `search` (featurestack catalog --rebuild search x) are kept.
    search.add_argument("--snapshot", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    search.add_argument("--rebuild", action="store_true", default=argparse.SUPPRESS, help="rebuild the snapshot first")
    catalog_commands.add_parser("build", help="build the snapshot and the static pages into <state>/catalog")

    feast = commands.add_parser("feast", help="the feast CLI on feature_repo/ with featurestack's settings")
    feast.add_argument("feast_args", nargs=argparse.REMAINDER)
    feast.set_defaults(handler=_cmd_feast)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
