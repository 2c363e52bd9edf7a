"""`featurestack` command line. Heavy imports (Spark, Dagster, Feast) happen inside the commands
that need them, so `featurestack --help` and `status` start fast."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from datetime import date
from pathlib import Path

from core.settings import PROJECT_ROOT, demo_start_date, load_settings


def _amount_shift(text: str):
    from pipelines.generator import AmountShift

    try:
        return AmountShift.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _cmd_generate(args: argparse.Namespace) -> int:
    from pipelines.generator import generate

    settings = load_settings()
    start = args.start or settings.start_date or demo_start_date(args.days)
    summary = generate(settings.landing_dir, start, args.days, args.transactions_per_day, seed=args.seed, amount_shift=args.shift_amount)
    print(f"generated {len(summary.days)} day(s) from {start} into {summary.landing_dir}")
    for table, rows in summary.rows.items():
        print(f"  {table:<13} {rows:>12,} rows")
    print(f"  fraud rate    {summary.fraud_rate:.2%}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from featurestack.platform_run import print_summary, run_platform

    outcome = run_platform(load_settings(), days=args.days, force=args.force)
    print_summary(outcome)
    return 1 if outcome.failed or outcome.blocked else 0


def _cmd_quarantine(args: argparse.Namespace) -> int:
    from featurestack.quarantine import quarantined_rows, referential, replay

    settings = load_settings()
    if args.quarantine_command == "replay":
        result = replay(settings)
        if not result.days:
            print("no quarantined rows break a referential rule: nothing to replay")
            return 0
        print(f"\nreplayed {len(result.days)} day(s): {', '.join(day.isoformat() for day in result.days)}")
        for (table, day), reasons in sorted(result.before.items(), key=str):
            left = result.after.get((table, day), {})
            for reason, rows in sorted(reasons.items()):
                print(f"  {table}[{day}] {reason:<20} {rows:>8,} quarantined before, {left.get(reason, 0):>8,} still quarantined")
        print(f"{result.released:,} row(s) released into raw")
        problems = result.outcome.failed + result.outcome.blocked
        for line in problems:
            print(f"  {line}")
        return 1 if problems else 0
    counts = quarantined_rows(settings)
    if not counts:
        print(f"nothing quarantined under {settings.quarantine_dir}")
    for (table, day), reasons in sorted(counts.items(), key=str):
        for reason, rows in sorted(reasons.items()):
            print(f"{table}[{day or 'snapshot'}]  {reason:<34} {rows:>10,}")
    replayable = referential(counts)
    if replayable:
        print(f"\n{sum(sum(c.values()) for c in replayable.values()):,} row(s) broke a referential rule: "
              "`featurestack quarantine replay` judges them again once the missing rows have landed")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from assets.training import gate, promote_challenger
    from core.redis_server import ensure_redis
    from training.train import train

    settings = load_settings()
    result = train(settings, ensure_redis(settings.redis_url, settings.state_dir).url, args.feature_service,
                   epochs=args.epochs, cutoff=args.label_cutoff)
    manifest, training = result.manifest, result.manifest.training
    print(f"trained {manifest.model} on {manifest.feature_service} ({len(manifest.feature_refs)} features) on {training.trained_on}")
    print(f"  labels   reported by {training.labels['cutoff']}; matured after {training.labels['maturity_days']} days: "
          f"{training.rows['matured']:,} rows matured, {training.rows['immature']:,} immature")
    print(f"  window   train {training.training_window['train']}  test {training.training_window['test']}")
    print(f"  rows     train {training.rows['train']:,} ({training.rows['train_positives']} positive)  "
          f"test {training.rows['test']:,} ({training.rows['test_positives']} positive)")
    for prefix, label in (("test_", "holdout"), ("test_matured_", "  matured"), ("test_immature_", "  immature")):
        values = {key.removeprefix(prefix): value for key, value in training.metrics.items()
                  if key.startswith(prefix) and key.removeprefix(prefix) in ("roc_auc", "pr_auc", "calibration_error", "rows")}
        print(f"  {label:<10} " + "  ".join(f"{key} {value:.4f}" if key != "rows" else f"rows {value:,.0f}" for key, value in values.items()))
    if result.champion is not None and "test_roc_auc" in result.champion_metrics:
        print(f"  champion v{result.champion.version} on the same holdout: roc_auc {result.champion_metrics['test_roc_auc']:.4f}")
    print(f"  artifact {result.model_dir}")
    print(f"  mlflow   run {result.run_id} (experiment {result.experiment_id}) at {settings.tracking_uri}")
    print(f"  registry {manifest.model} version {result.registered.version}, alias challenger")
    verdict = gate(settings, result)
    for check in verdict.checks:
        print(f"  gate     {'pass' if check.passed else 'FAIL'}  {check.name:<19} {check.reason}")
    if verdict.passed:
        promote_challenger(settings, manifest.model, note="gate passed (featurestack train)")
        print(f"  promoted: {manifest.model} version {verdict.version} is the champion (models:/{manifest.model}@champion)")
    else:
        print(f"  NOT promoted: {'; '.join(verdict.refusals)}; the champion stays")
    _record_in_dagster(settings, result, verdict, verdict.passed)
    return 0 if verdict.passed else 1


def _record_in_dagster(settings, result, verdict, promoted: bool) -> None:
    import dagster as dg

    from assets.training import record_training

    with dg.DagsterInstance.from_config(str(_dagster_home(settings))) as instance:
        record_training(instance, result, verdict, promoted)
    print(f"  recorded in Dagster ({settings.dagster_home}): training/{result.manifest.feature_service}/training_set, /model"
          f" with its gate checks{', /champion' if promoted else ''}")


def _cmd_models(args: argparse.Namespace) -> int:
    from featurestack.models import list_models, promote, rollback

    settings = load_settings()
    handlers = {"list": lambda: list_models(settings, args.model), "promote": lambda: promote(settings, args.model, args.version),
                "rollback": lambda: rollback(settings, args.model)}
    try:
        handlers[args.models_command or "list"]()
    except ValueError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from core.shutdown import serve_http
    from serving.app import create_app

    print(f"featurestack serving on http://{args.host}:{args.port} (/predict, /features, /v2 (KServe), /readyz, /metrics)", file=sys.stderr)
    serve_http(create_app(load_settings()), host=args.host, port=args.port)
    return 0


def _cmd_stream(args: argparse.Namespace) -> int:
    import logging

    from eventlog.logs import open_event_log
    from core.redis_server import ensure_redis
    from core.shutdown import stops_on_signals
    from onlinestore.online_reader import online_store_client
    from streaming.processor import StreamProcessor, consumer_group
    from streaming.views import streamed_views

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = load_settings()
    url = ensure_redis(settings.redis_url, settings.state_dir).url
    views = streamed_views(settings, url)
    if args.view not in views:
        print(f"no windowed feature view {args.view!r}; windowed views: {sorted(views) or 'none'}", file=sys.stderr)
        return 2
    view = views[args.view]
    client = online_store_client(url, timeout_s=5.0)
    event_log = open_event_log(settings.stream, client, settings.feast_project, view.spec.source_table, view.spec.entity_key,
                               consumer_group(view.spec.view))
    processor = StreamProcessor(client, settings.feast_project, view.spec, view.layout, settings.stream.partitions,
                                settings.stream.batch_events, settings.stream.block_ms, log=event_log)
    print(f"stream processor {processor.name}: {view.spec.source_table} events ({settings.stream.log} log) -> {args.view} "
          f"in Redis {url} (project {settings.feast_project}, {settings.stream.partitions} partitions); Ctrl-C stops it", flush=True)
    # SIGINT/SIGTERM: the batch in hand is written and acknowledged, the leases released.
    try:
        with stops_on_signals() as stopping:
            processor.run(stopping)
    finally:
        event_log.close()
    print(f"stopped: {processor.rows_written:,} rows written", flush=True)
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from core.redis_server import ensure_redis
    from featurestack.replay import print_report, replay_day

    settings = load_settings()
    report = replay_day(settings, ensure_redis(settings.redis_url, settings.state_dir).url, args.day, args.mode, args.limit)
    print_report(report)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from featurestack.status import print_status

    print_status(load_settings())
    return 0


def _resolved_environment(settings) -> dict[str, str]:
    """The environment a child process (dagster, feast) needs to see what featurestack sees: the Redis
    found, the Dagster instance, and the Feast config's values kept off disk (passwords)."""
    from core.feast_repo import feast_child_environment
    from core.redis_server import ensure_redis

    endpoint = ensure_redis(settings.redis_url, settings.state_dir)
    print(f"Redis: {endpoint.describe()}", file=sys.stderr)
    return {**os.environ, **feast_child_environment(settings, endpoint.url), "REDIS_URL": endpoint.url,
            "DAGSTER_HOME": str(_dagster_home(settings))}


def _dagster_home(settings) -> Path:
    """The platform's persistent Dagster instance folder (a dagster.yaml of defaults: all stored in it)."""
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    (settings.dagster_home / "dagster.yaml").touch()
    return settings.dagster_home


def _exec(program: str, argv: list[str], env: dict[str, str]) -> int:
    executable = _program(program, env)
    if executable is None:
        return 127
    os.execve(executable, [program, *argv], env)
    return 0  # not reached


def _program(name: str, env: dict[str, str]) -> str | None:
    """The installed program next to this Python (or on PATH); None, said on stderr, when missing."""
    executable = shutil.which(name, path=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
    if executable is None:
        print(f"featurestack: `{name}` not found; install the project first (make install)", file=sys.stderr)
    return executable


def _cmd_dev(args: argparse.Namespace) -> int:
    from featurestack.dev import run_dev

    env = _resolved_environment(load_settings())
    dagster = _program("dagster", env)
    if dagster is None:
        return 127
    command = [dagster, "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", args.host, "-p", str(args.port)]
    return run_dev(command, env, Path(env["DAGSTER_HOME"]))


def _cmd_feast(args: argparse.Namespace) -> int:
    from core.feast_repo import apply_repo, write_feast_config

    settings = load_settings()
    env = _resolved_environment(settings)
    feast_args = args.feast_args[1:] if args.feast_args[:1] == ["--"] else args.feast_args
    if feast_args[:1] == ["apply"]:
        # Plain `feast apply` registers the offline tables where a fresh clone keeps them; this apply binds
        # them to these settings' lake and profile, as the platform's feast_registry asset does.
        if feast_args[1:]:
            raise SystemExit(f"featurestack feast -- apply takes no options (got {' '.join(feast_args[1:])})")
        contents = apply_repo(settings, env["REDIS_URL"])
        print(f"applied {len(contents.feature_views)} feature views of {settings.feature_repo_dir} "
              f"to project {settings.feast_project} ({settings.registry_path})")
        return 0
    config = write_feast_config(settings, env["REDIS_URL"])
    return _exec("feast", ["-c", str(settings.feature_repo_dir), "-f", str(config), *feast_args], env)


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
    from catalog.snapshot import SNAPSHOT_FILE, catalog_dir, publish
    from catalog.web import CatalogState, serve

    snapshot = _catalog_snapshot(args)
    rebuild = None if args.snapshot else (lambda: publish(load_settings())[0])
    # The saved snapshot is followed: a rebuild by the Dagster `catalog` asset after a run shows up.
    follow = args.snapshot or catalog_dir(load_settings()) / SNAPSHOT_FILE
    print(f"featurestack catalog on http://{args.host}:{args.port}/ (JSON API under /api/; follows {follow})", file=sys.stderr)
    serve(CatalogState(snapshot, rebuild, follow=follow), host=args.host, port=args.port)
    return 0


def _cmd_catalog_search(args: argparse.Namespace) -> int:
    import json

    from catalog.search import rank_features

    snapshot = _catalog_snapshot(args)
    matches = rank_features(snapshot["features"], " ".join(args.text))
    if args.json:
        print(json.dumps([{k: v for k, v in m.feature.items() if k != "stats"} | {"matched": list(m.reasons)} for m in matches], indent=1))
        return 0 if matches else 1
    if not matches:
        print(f"no feature matches {' '.join(args.text)!r}", file=sys.stderr)
        return 1
    width = max(len(m.feature["id"]) for m in matches)
    for match in matches:
        feature = match.feature
        stats = feature.get("stats") or {}
        nulls = f"{stats['null_rate']:.1%} null" if stats.get("null_rate") is not None else "no data"
        print(f"{feature['id']:<{width}}  {feature['dtype']:<8} {feature['owner']:<28} freshness={feature['freshness']:<8} "
              f"validation={feature['validation']:<8} {nulls:<10} {feature['description']}")
        print(f"{'':<{width}}  matched {'; '.join(match.reasons)}")
    return 0


def _utc_instant(text: str):
    from datetime import datetime, timezone

    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="featurestack", description="featurestack: features from raw payments to Redis, with Dagster, Spark and Feast.")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="write seeded card payments into the landing zone")
    generate.add_argument("--days", type=int, default=3)
    generate.add_argument("--transactions-per-day", type=int, default=20_000)
    generate.add_argument("--seed", type=int, default=7)
    generate.add_argument("--start", type=date.fromisoformat, default=None, help="first day (default FEATURESTACK_START_DATE, else the days end yesterday, UTC)")
    generate.add_argument("--shift-amount", type=_amount_shift, default=None, metavar="YYYY-MM-DD:FACTOR",
                          help="plant a drift: multiply that day's amounts by FACTOR (the drift monitor should flag it)")
    generate.set_defaults(handler=_cmd_generate)

    run = commands.add_parser("run", help="run the Dagster asset graph in-process for the landed days")
    run.add_argument("--days", type=int, default=None, help="only the first N landed days (default: all)")
    run.add_argument("--force", action="store_true", help="rerun partitions whose inputs and code did not change")
    run.set_defaults(handler=_cmd_run)

    quarantine = commands.add_parser("quarantine", help="quarantined rows per table, day and reason; `quarantine replay`")
    quarantine.set_defaults(handler=_cmd_quarantine, quarantine_command=None)
    quarantine.add_subparsers(dest="quarantine_command").add_parser(
        "replay", help="rerun the days whose rows broke a referential rule (unknown_user, ...): late rows now known reach raw")

    train = commands.add_parser("train", help="train the fraud model on a feature service (Feast SDK, PIT-correct)")
    train.add_argument("--feature-service", default="fraud_detection_v1")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--label-cutoff", type=_utc_instant, default=None,
                       help="use only chargebacks reported by this UTC instant, e.g. 2026-11-20T00:00 (default: now)")
    train.set_defaults(handler=_cmd_train)

    models = commands.add_parser("models", help="registered model versions and aliases: `models list | promote [VERSION] | rollback`")
    models.add_argument("--model", default="fraud_mlp", help="the registered model (a feature service's `model` tag)")
    models.set_defaults(handler=_cmd_models, models_command=None)
    models_commands = models.add_subparsers(dest="models_command")
    models_commands.add_parser("list", help="versions, aliases, metrics, gate outcome, champion history")
    promote = models_commands.add_parser("promote", help="make VERSION (default: the challenger) the champion, if its gate passed")
    promote.add_argument("version", nargs="?", default=None)
    models_commands.add_parser("rollback", help="move the champion alias back to the previous champion")

    serve = commands.add_parser("serve", help="the online prediction endpoint (FastAPI on uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(handler=_cmd_serve)

    stream = commands.add_parser("stream", help="the stream processor: events from the log -> windowed features in Redis")
    stream.add_argument("--view", default="user_velocity", help="the windowed feature view to keep fresh")
    stream.set_defaults(handler=_cmd_stream)

    replay = commands.add_parser("replay", help="score a landed day through serving in event order and measure training/serving skew")
    replay.add_argument("--day", type=date.fromisoformat, default=None, help="YYYY-MM-DD (default: the last landed day)")
    replay.add_argument("--mode", choices=("stream", "daily"), default="stream",
                        help="stream: the stream processor keeps features fresh; daily: only the nightly publish")
    replay.add_argument("--limit", type=int, default=None, help="only the day's first N transactions")
    replay.set_defaults(handler=_cmd_replay)

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
    search = catalog_commands.add_parser("search", help="features matching every word, ranked: name > description > view > tags, each saying why")
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
