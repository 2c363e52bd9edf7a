"""What serving served, for Prometheus: rows scored per view, the age of the values served, and an
estimated cost per 1,000 predictions.

Observed per scored slice of answered rows (serving.app's scored hook: shadow scorings are no
predictions), with numpy (a bincount per view), not per row: the age histogram is kept here
and exposed by a collector, since prometheus_client's Histogram observes one value per call.

- featurestack_scored_rows_total{view}: rows answered with the view's features read. Beside
  featurestack_missing_entity_rows_total{endpoint="/predict",view} it gives the missing-entity rate as
  a ratio of rates.
- featurestack_served_feature_age_seconds{view}: scoring time minus the served value's event timestamp
  (Feast's `_ts`, which the online reader reads anyway for the TTL: no extra Redis round trip); rows
  whose entity had no (unexpired) row of the view are not observed.
- featurestack_cost_per_1k_predictions_usd: with an hourly price configured.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from onlinestore.online_reader import OnlineFeatures

# From fresh stream updates (seconds) to the views' TTLs (days).
AGE_BUCKETS_S = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 3 * 3600.0, 6 * 3600.0, 12 * 3600.0, 86_400.0, 2 * 86_400.0,
                 7 * 86_400.0, 30 * 86_400.0)


class ServedFeatureMetrics(Collector):
    def __init__(self, registry: CollectorRegistry, hourly_price_usd: float = 0.0):
        """`hourly_price_usd` > 0: also estimate the cost per 1,000 predictions from it."""
        self._bounds = np.array(AGE_BUCKETS_S)
        self._lock = threading.Lock()
        self._age_counts: dict[str, np.ndarray] = {}  # per view: observations per bucket (the last one: +Inf)
        self._age_sums: dict[str, float] = {}
        self._hourly_price_usd = hourly_price_usd
        self._started = time.monotonic()
        self._predictions = 0
        self._registry = registry
        self._scored_rows = Counter("featurestack_scored_rows_total",
                                    "Rows answered (/predict, /v2 infer), per feature view read for them (the denominator of "
                                    "featurestack_missing_entity_rows_total{endpoint=\"/predict\"})", ["view"], registry=registry)
        self._scored_rows_of: dict[str, Counter] = {}  # its child per view (labels() looks it up under a lock)
        registry.register(self)

    def observe(self, features: OnlineFeatures, now_nanos: int | None = None) -> None:
        """One scored batch: its rows per view, and the age of each view's values that were served."""
        now_nanos = time.time_ns() if now_nanos is None else now_nanos
        rows = len(features.values)
        served = ~features.missing_entity
        ages = np.maximum(now_nanos - features.event_nanos, 0) / 1e9  # a `_ts` ahead of this clock counts as age 0
        with self._lock:
            self._predictions += rows
            for index, view in enumerate(features.views):
                view_ages = ages[served[:, index], index]
                counts = np.bincount(np.searchsorted(self._bounds, view_ages, side="left"), minlength=len(self._bounds) + 1)
                if view in self._age_counts:
                    self._age_counts[view] += counts
                    self._age_sums[view] += float(view_ages.sum())
                else:
                    self._age_counts[view], self._age_sums[view] = counts, float(view_ages.sum())
        for view in features.views:
            if view not in self._scored_rows_of:
                self._scored_rows_of[view] = self._scored_rows.labels(view=view)
            self._scored_rows_of[view].inc(rows)

    def collect(self):
        ages = HistogramMetricFamily("featurestack_served_feature_age_seconds",
                                     "Age of the feature values served: scoring time minus the value's event timestamp "
                                     "(Feast's _ts), per view; rows whose entity the view lacked are not counted",
                                     labels=["view"])
        with self._lock:
            snapshot = [(view, counts.copy(), self._age_sums[view]) for view, counts in self._age_counts.items()]
            predictions = self._predictions
        for view, counts, total in snapshot:
            cumulative = np.cumsum(counts).tolist()
            buckets = [(floatToGoString(bound), count) for bound, count in zip(AGE_BUCKETS_S, cumulative)] + [("+Inf", cumulative[-1])]
            ages.add_metric([view], buckets, total)
        yield ages
        if self._hourly_price_usd > 0 and predictions:
            cost = GaugeMetricFamily(
                "featurestack_cost_per_1k_predictions_usd",
                "Estimated serving cost per 1,000 predictions since this server started: the configured hourly price "
                "(FEATURESTACK_GPU_HOURLY_PRICE_USD) x hours up / rows scored x 1000. The machine is paid while idle "
                "too, so idle time raises it; absent until the first prediction")
            cost.add_metric([], self._hourly_price_usd * (time.monotonic() - self._started) / 3600 / predictions * 1000)
            yield cost

    def describe(self):
        return []  # families depend on the data seen: collected at scrape time only

    def close(self) -> None:
        self._registry.unregister(self)
        self._registry.unregister(self._scored_rows)
