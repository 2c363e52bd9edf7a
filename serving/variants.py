"""Which model scores a row: the champion and the challenger, followed through the registry, swapped
without a restart, and routed by canary or shadow.

- Sources: a fixed folder (FEATURESTACK_MODEL_DIR: one model, never reloaded; benchmarks) or the
  registry (`models:/<name>@champion`, plus the challenger alias when routing is canary or shadow).
- Hot reload: every `reload_interval_s` the registry is asked where the aliases point; a version that
  moved in is fetched, loaded and warmed up off the event loop, then the deployment (champion,
  challenger) is replaced in one assignment. A request takes the deployment once and holds its
  models (in_flight) until its rows are scored, so a swapped-out model finishes what it was given
  (its micro-batcher drains) and is stopped only then. A version that cannot be loaded is skipped
  (the previous one stays) until the alias moves again.
- Routing: canary sends the rows whose routing entity hashes below `canary_share` to the challenger
  (a fixed hash, the same in every replica and process: a user always meets the same model; raising
  the share keeps the users already in); shadow scores every row with both and answers with the
  champion, off the request's path.
- Every scored slice, answered or shadow, goes to the `on_scored` hook as ScoredRows (the served-
  feature log's rows), and is counted per variant and model version on /metrics.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily

from core.artifacts import ModelManifest
from core.model_registry import CHALLENGER, CHAMPION, ModelVersion, parse_model_uri
from core.settings import ServingSettings, Settings
from serving.batching import MicroBatcher
from serving.predictor import Predictor, Scored

log = logging.getLogger("featurestack.serving")

VARIANTS = (CHAMPION, CHALLENGER)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


# --------------------------------------------------------------------------------------------------
# where models come from


@dataclass(frozen=True)
class ModelRef:
    """One model version a variant should serve: `version` is the registry's version number, or the
    manifest's version for a fixed folder."""

    name: str
    version: str
    uri: str  # models:/<name>/<version>, or the folder
    registered: ModelVersion | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.name, self.version


class FixedModelSource:
    """FEATURESTACK_MODEL_DIR: one folder, the champion for the life of the process."""

    follows = False

    def __init__(self, model_dir: Path):
        self.model_dir = model_dir
        manifest = ModelManifest.read(model_dir)
        self._ref = ModelRef(manifest.model, manifest.version, str(model_dir))

    def describe(self) -> str:
        return f"model folder {self.model_dir}"

    def wanted(self) -> dict[str, ModelRef]:
        return {CHAMPION: self._ref}

    def fetch(self, ref: ModelRef) -> Path:
        return self.model_dir


class RegistrySource:
    """The versions the aliases of `model_uri`'s model point at (the challenger alias only when asked)."""

    follows = True

    def __init__(self, tracking_uri: str, cache_dir: Path, model_uri: str, challenger_alias: str | None):
        from core.model_registry import ModelRegistry  # mlflow: imported only when a registry is used

        self.name, self.champion_alias = parse_model_uri(model_uri)
        self.challenger_alias = challenger_alias
        self.registry = ModelRegistry(tracking_uri, cache_dir)

    def describe(self) -> str:
        return f"models:/{self.name}@{self.champion_alias} in the registry {self.registry.tracking_uri}"

    def wanted(self) -> dict[str, ModelRef]:
        aliases = {CHAMPION: self.champion_alias, CHALLENGER: self.challenger_alias}
        wanted = {}
        for variant, alias in aliases.items():
            version = self.registry.by_alias(self.name, alias) if alias else None
            if version is not None:
                wanted[variant] = ModelRef(self.name, version.version, f"models:/{self.name}/{version.version}", version)
        return wanted

    def fetch(self, ref: ModelRef) -> Path:
        return self.registry.fetch(ref.registered).model_dir


def model_source(settings: Settings) -> FixedModelSource | RegistrySource:
    serving = settings.serving
    if serving.model_dir:
        return FixedModelSource(Path(serving.model_dir))
    return RegistrySource(settings.tracking_uri, settings.model_cache_dir, serving.model_uri,
                          serving.challenger_alias if serving.routing != "none" else None)


def champion_model_dir(settings: Settings) -> Path:
    """The folder of the model serving would answer with now (fetched from the registry if need be)."""
    source = model_source(settings)
    wanted = source.wanted()
    if CHAMPION not in wanted:
        raise LookupError(f"no champion: {source.describe()} is not set (train and promote a model, or set FEATURESTACK_MODEL_DIR)")
    return source.fetch(wanted[CHAMPION])


async def _off_loop(function: Callable[..., Any], *args: Any) -> Any:
    """`function(*args)` in a daemon thread: a registry call that hangs can neither block the event
    loop nor hold up the process's exit (asyncio's default executor is joined at exit)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if not done.done():
            done.set_exception(error) if error is not None else done.set_result(result)

    def run() -> None:
        try:
            outcome = (function(*args), None)
        except BaseException as error:  # handed to the awaiting coroutine
            outcome = (None, error)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop closed meanwhile: nobody waits any more
            pass

    threading.Thread(target=run, daemon=True, name="model-loader").start()
    return await done


# --------------------------------------------------------------------------------------------------
# loaded models and deployments


@dataclass(eq=False)
class ServedModel:
    """A loaded version with its own micro-batcher. `in_flight` counts the requests holding it."""

    ref: ModelRef
    predictor: Predictor
    batcher: MicroBatcher | None = None
    in_flight: int = 0
    drained: bool = False  # swapped out, everything it was given scored, its batcher stopped
    _idle: asyncio.Event | None = None

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def version(self) -> str:
        return self.ref.version

    def start(self, settings: ServingSettings, on_batch: Callable[[int], None]) -> None:
        """On the event loop: the batcher runs this model's batches, one after another, in its thread."""
        keys = [name for name, _ in self.predictor.entity_keys]
        predict = self.predictor.predict

        def run(*columns: np.ndarray) -> Scored:
            return predict(dict(zip(keys, columns[:-2])), columns[-2], columns[-1])

        self.batcher = MicroBatcher(run, settings.max_batch_rows, settings.max_wait_ms, settings.max_pending_rows, on_batch=on_batch)
        self.batcher.start()
        self._idle = asyncio.Event()
        self._idle.set()

    def acquire(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def release(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def drain(self) -> None:
        """Once no request holds it any more (everything it was given is scored), stop its batcher."""
        await self._idle.wait()
        await self.batcher.stop()
        self.drained = True


@dataclass(frozen=True)
class Deployment:
    """The models serving routes to now; replaced as a whole, never changed in place."""

    champion: ServedModel
    challenger: ServedModel | None = None

    def get(self, variant: str) -> ServedModel | None:
        return self.champion if variant == CHAMPION else self.challenger

    @property
    def models(self) -> list[ServedModel]:
        """Each loaded model once (both aliases may name the same version)."""
        return list({id(model): model for model in (self.champion, self.challenger) if model is not None}.values())


# --------------------------------------------------------------------------------------------------
# requests, answers, the scored hook


@dataclass(frozen=True)
class ScoringRequest:
    """The rows of one request, as columns: an entity column per entity key, the amounts, and the
    transactions' instants (features are read as of one microsecond before each)."""

    request_id: str
    entities: dict[str, np.ndarray]
    amounts: np.ndarray
    event_micros: np.ndarray  # int64 epoch microseconds
    txn_ids: list[str | None]

    def __len__(self) -> int:
        return len(self.amounts)

    def as_of_nanos(self) -> np.ndarray:
        """One microsecond before each transaction, in epoch nanoseconds (clamped to int64: any valid
        date is accepted)."""
        micros = np.clip(self.event_micros, INT64_MIN // 1000 + 2, INT64_MAX // 1000)
        return micros * 1000 - 1000

    def columns(self, keys: list[str], rows: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        as_of = self.as_of_nanos()
        columns = (*(self.entities[key] for key in keys), self.amounts, as_of)
        return columns if rows is None else tuple(column[rows] for column in columns)


@dataclass(frozen=True)
class ScoredRows:
    """Rows of one request as one variant scored them: what the served-feature log records
    (core/served_log.py). `answered` is False for shadow scores, which the client never saw."""

    request_id: str
    variant: str
    model_name: str
    model_version: str
    answered: bool
    scored_at: datetime
    txn_ids: list[str | None]
    event_micros: np.ndarray
    entities: dict[str, np.ndarray]
    feature_refs: tuple[str, ...]
    request_features: tuple[str, ...]
    scored: Scored  # scores, store features (values, missing per view), request-time feature values


ScoredHook = Callable[[ScoredRows], None]


@dataclass(frozen=True)
class AnsweredRows:
    variant: str
    model: ServedModel
    rows: np.ndarray  # positions in the request
    scored: Scored


@dataclass(frozen=True)
class Answer:
    parts: tuple[AnsweredRows, ...]
    champion_version: str

    def scores(self, rows: int) -> np.ndarray:
        scores = np.empty(rows, np.float32)
        for part in self.parts:
            scores[part.rows] = part.scored.scores
        return scores


def route_points(values: np.ndarray) -> np.ndarray:
    """Each entity value's fixed point in [0, 1): splitmix64 of an integer (a string: blake2b), the same
    in every process and replica. A row goes to the canary when its point is below the share."""
    if values.dtype.kind in "iu":
        mixed = values.astype(np.int64).view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        mixed = (mixed ^ (mixed >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        mixed = (mixed ^ (mixed >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        mixed ^= mixed >> np.uint64(31)
    else:
        mixed = np.fromiter((int.from_bytes(hashlib.blake2b(str(value).encode(), digest_size=8).digest(), "little")
                             for value in values.tolist()), np.uint64, len(values))
    return (mixed >> np.uint64(11)).astype(np.float64) / float(2**53)


# --------------------------------------------------------------------------------------------------
# metrics


class ScoreHistograms:
    """featurestack_variant_score{variant, model_version}: counted with numpy (a request of 4,096 rows
    is one searchsorted, not 4,096 observe calls)."""

    BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0)

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], np.ndarray] = {}
        self._sums: dict[tuple[str, str], float] = {}

    def observe(self, variant: str, version: str, scores: np.ndarray) -> None:
        bucket = np.searchsorted(self.BUCKETS, scores, side="left")  # the first bound >= the score
        counts = np.bincount(bucket, minlength=len(self.BUCKETS) + 1)
        key = variant, version
        self._counts[key] = self._counts.get(key, 0) + counts
        self._sums[key] = self._sums.get(key, 0.0) + float(scores.sum(dtype=np.float64))

    def collect(self):
        family = HistogramMetricFamily("featurestack_variant_score", "Scores given, per variant and model version",
                                       labels=["variant", "model_version"])
        for (variant, version), counts in sorted(self._counts.items()):
            cumulative = np.cumsum(counts).tolist()
            buckets = [(f"{bound:g}", count) for bound, count in zip(self.BUCKETS, cumulative)] + [("+Inf", cumulative[-1])]
            family.add_metric([variant, version], buckets, self._sums[(variant, version)])
        yield family


class VariantMetrics:
    LABELS = ["variant", "model_version"]

    def __init__(self, registry: CollectorRegistry, batch_rows: Histogram):
        self.batch_rows = batch_rows
        self.requests = Counter("featurestack_variant_requests_total", "Requests with rows scored by the variant (answered or shadow)",
                                self.LABELS, registry=registry)
        self.rows = Counter("featurestack_variant_rows_total", "Rows scored by the variant (answered or shadow)", self.LABELS,
                            registry=registry)
        self.latency = Histogram("featurestack_variant_seconds", "A request's rows through the variant: queue, feature read, model",
                                 self.LABELS, registry=registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.scores = ScoreHistograms()
        registry.register(self.scores)
        self.device = Gauge("featurestack_model_device_info", "Loaded models: the device each runs on", ["variant", "model_version",
                            "device", "runtime"], registry=registry)
        self.swaps = Counter("featurestack_model_swaps_total", "Versions that took a variant's place without a restart", ["variant"],
                             registry=registry)
        self.load_failures = Counter("featurestack_model_load_failures_total",
                                     "Versions an alias named that could not be fetched or loaded (the previous one stays)",
                                     registry=registry)
        self.registry_errors = Counter("featurestack_model_registry_errors_total",
                                       "Registry polls that failed (serving goes on with the loaded versions)", registry=registry)
        self.shadow_failures = Counter("featurestack_shadow_failures_total", "Shadow scorings that failed (no answer was affected)",
                                       registry=registry)
        self.hook_failures = Counter("featurestack_scored_hook_failures_total", "Scored rows the on_scored hook raised on",
                                     registry=registry)

    def scored(self, variant: str, version: str, rows: int, seconds: float, scores: np.ndarray) -> None:
        self.requests.labels(variant, version).inc()
        self.rows.labels(variant, version).inc(rows)
        self.latency.labels(variant, version).observe(seconds)
        self.scores.observe(variant, version, scores)

    def show(self, deployment: Deployment, previous: Deployment | None) -> None:
        """The device-info gauge lists what is loaded now."""
        if previous is not None:
            for variant in VARIANTS:
                if (model := previous.get(variant)) is not None:
                    self.device.remove(variant, model.version, model.predictor.device, model.predictor.runner.runtime)
        for variant in VARIANTS:
            if (model := deployment.get(variant)) is not None:
                self.device.labels(variant, model.version, model.predictor.device, model.predictor.runner.runtime).set(1)


# --------------------------------------------------------------------------------------------------
# the router


class ModelRouter:
    def __init__(self, source: FixedModelSource | RegistrySource, settings: ServingSettings, client: redis.Redis, project: str,
                 metrics: VariantMetrics, on_scored: ScoredHook | None = None):
        self.source = source
        self.settings = settings
        self.client = client
        self.project = project
        self.metrics = metrics
        self.on_scored = on_scored
        self.entity_keys: tuple[tuple[str, str], ...] = ()
        self.routing_key = ""
        self._deployment: Deployment | None = None
        self._failed: set[tuple[str, str]] = set()  # versions that would not load: skipped until the alias moves
        self._update_lock = asyncio.Lock()
        self._follower: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()  # shadow scorings and drains
        self._draining: set[ServedModel] = set()

    @property
    def deployment(self) -> Deployment:
        if self._deployment is None:
            raise RuntimeError("no model loaded yet")
        return self._deployment

    @property
    def keys(self) -> list[str]:
        return [name for name, _ in self.entity_keys]

    # -- loading and swapping ---------------------------------------------------------------------

    def _load(self, ref: ModelRef) -> ServedModel:
        """Fetch, load and warm up one version (in a worker thread)."""
        predictor = Predictor(self.source.fetch(ref), self.client, self.settings.device, self.project)
        if self.entity_keys and predictor.entity_keys != self.entity_keys:
            raise ValueError(f"{ref.uri} takes entities {list(predictor.entity_keys)}, the served models {list(self.entity_keys)}: "
                             "a new request schema needs a restart")
        predictor.warm_up()
        return ServedModel(ref, predictor)

    async def start(self) -> None:
        """Load the champion (it must exist) and the challenger if routing wants one, then follow the
        registry."""
        wanted = await _off_loop(self.source.wanted)
        if CHAMPION not in wanted:
            raise LookupError(f"no champion to serve: {self.source.describe()} is not set (train and promote a model, "
                              "or set FEATURESTACK_MODEL_DIR)")
        champion = await _off_loop(self._load, wanted[CHAMPION])
        self.entity_keys = champion.predictor.entity_keys
        self.routing_key = self.settings.routing_key or next(iter(champion.predictor.manifest.feature_views.values())).join_keys[0][0]
        if self.routing_key not in self.keys:
            raise ValueError(f"FEATURESTACK_SERVING_ROUTING_KEY={self.routing_key!r} is not an entity key of the model {self.keys}")
        champion.start(self.settings, self.metrics.batch_rows.observe)
        self._deployment = Deployment(champion)
        self.metrics.show(self._deployment, None)
        await self._apply(wanted)
        if self.source.follows and self.settings.reload_interval_s > 0:
            self._follower = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            try:
                await self.update()
            except Exception as error:  # the registry is down or slow: serve on with what is loaded
                self.metrics.registry_errors.inc()
                log.warning("model registry poll failed (serving goes on with the loaded versions): %s: %s", type(error).__name__, error)

    async def update(self) -> bool:
        """Ask the source where the aliases point now and swap in what changed. True when it swapped."""
        return await self._apply(await _off_loop(self.source.wanted))

    async def _apply(self, wanted: dict[str, ModelRef]) -> bool:
        async with self._update_lock:
            current = self.deployment
            loaded = {model.ref.key: model for model in current.models}
            chosen: dict[str, ServedModel | None] = {}
            for variant in VARIANTS:
                ref, previous = wanted.get(variant), current.get(variant)
                if ref is None:  # alias removed: no challenger; a champion stays what it was (never nothing)
                    chosen[variant] = previous if variant == CHAMPION else None
                elif ref.key in loaded:
                    chosen[variant] = loaded[ref.key]
                elif ref.key in self._failed:
                    chosen[variant] = previous
                else:
                    try:
                        loaded[ref.key] = chosen[variant] = await _off_loop(self._load, ref)
                    except Exception as error:
                        self._failed.add(ref.key)
                        self.metrics.load_failures.inc()
                        log.error("cannot serve %s as the %s (keeping %s): %s: %s", ref.uri, variant,
                                  previous.ref.uri if previous else "none", type(error).__name__, error)
                        chosen[variant] = previous
            new = Deployment(chosen[CHAMPION], chosen[CHALLENGER])
            if new.champion is current.champion and new.challenger is current.challenger:
                return False
            for model in new.models:
                if model.batcher is None:
                    model.start(self.settings, self.metrics.batch_rows.observe)
            self._deployment = new  # the swap: requests from here on route to the new models
            self.metrics.show(new, current)
            for variant in VARIANTS:
                if new.get(variant) is not None and new.get(variant) is not current.get(variant):
                    if self._follower is not None:  # not the start-up's first load
                        self.metrics.swaps.labels(variant).inc()
                    log.warning("serving %s as the %s", new.get(variant).ref.uri, variant)
            retired = [model for model in current.models if all(model is not kept for kept in new.models)]
            for model in retired:
                self._draining.add(model)
                self._in_background(self._drain(model))
            return True

    async def _drain(self, model: ServedModel) -> None:
        await model.drain()
        self._draining.discard(model)

    def _in_background(self, work) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
        for task in list(self._background):
            task.cancel()
        for model in [*(self._deployment.models if self._deployment else []), *self._draining]:
            await model.batcher.stop()

    # -- scoring ----------------------------------------------------------------------------------

    async def score(self, request: ScoringRequest) -> Answer:
        deployment = self.deployment  # taken once: a swap during this request does not move its rows
        models = deployment.models
        for model in models:
            model.acquire()
        try:
            challenger, routing = deployment.challenger, self.settings.routing
            everything = np.arange(len(request))
            if challenger is None or routing == "none":
                parts = [(CHAMPION, deployment.champion, everything)]
            elif routing == "canary":
                to_challenger = route_points(request.entities[self.routing_key]) < self.settings.canary_share
                parts = [(CHAMPION, deployment.champion, np.flatnonzero(~to_challenger)),
                         (CHALLENGER, challenger, np.flatnonzero(to_challenger))]
            else:  # shadow: the challenger scores the same rows after the answer, on its own
                parts = [(CHAMPION, deployment.champion, everything)]
                challenger.acquire()
                self._in_background(self._shadow(challenger, request))
            scored = await asyncio.gather(*(self._run(variant, model, request, rows, answered=True)
                                            for variant, model, rows in parts if len(rows)))
            answered = [AnsweredRows(variant, model, rows, result)
                        for (variant, model, rows), result in zip([p for p in parts if len(p[2])], scored)]
            return Answer(tuple(answered), deployment.champion.version)
        finally:
            for model in models:
                model.release()

    async def _shadow(self, challenger: ServedModel, request: ScoringRequest) -> None:
        try:
            await self._run(CHALLENGER, challenger, request, np.arange(len(request)), answered=False)
        except Exception as error:  # a shadow never fails the request; it is counted
            self.metrics.shadow_failures.inc()
            log.debug("shadow scoring failed: %s: %s", type(error).__name__, error)
        finally:
            challenger.release()

    async def _run(self, variant: str, model: ServedModel, request: ScoringRequest, rows: np.ndarray, answered: bool) -> Scored:
        started = time.perf_counter()
        part = rows if len(rows) < len(request) else None
        scored: Scored = await model.batcher.submit(*request.columns(self.keys, part))
        self.metrics.scored(variant, model.version, len(rows), time.perf_counter() - started, scored.scores)
        if self.on_scored is not None:
            self._deliver(ScoredRows(
                request_id=request.request_id, variant=variant, model_name=model.name, model_version=model.version, answered=answered,
                scored_at=datetime.now(timezone.utc), txn_ids=[request.txn_ids[i] for i in rows.tolist()] if part is not None
                else request.txn_ids, event_micros=request.event_micros if part is None else request.event_micros[part],
                entities={key: column if part is None else column[part] for key, column in request.entities.items()},
                feature_refs=model.predictor.manifest.feature_refs, request_features=model.predictor.manifest.request_features,
                scored=scored))
        return scored

    def _deliver(self, rows: ScoredRows) -> None:
        try:
            self.on_scored(rows)
        except Exception as error:  # logging what was served must never fail serving it
            self.metrics.hook_failures.inc()
            log.warning("on_scored hook failed: %s: %s", type(error).__name__, error)
