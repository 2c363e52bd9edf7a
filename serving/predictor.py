"""The model as trained: loaded from its manifest, fed exactly the manifest's features."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import redis

from core.artifacts import ModelManifest
from onlinestore.online_reader import OnlineFeatureReader, OnlineFeatures
from onlinestore.redis_layout import ViewLayout
from serving.runner import load_runner
from training.features import model_inputs


@dataclass(frozen=True)
class Scored:
    """Rows as one model scored them: the probabilities, the store features read for them and the
    request-time features computed for them (columns in the manifest's `request_features` order)."""

    scores: np.ndarray
    features: OnlineFeatures
    request_values: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, rows: slice | np.ndarray) -> Scored:
        """These rows only (the micro-batcher hands each request its slice of the batch)."""
        features = self.features
        return Scored(self.scores[rows], replace(features, values=features.values[rows], missing_entity=features.missing_entity[rows],
                                                 event_nanos=None if features.event_nanos is None else features.event_nanos[rows]),
                      self.request_values[rows])


class Predictor:
    """Loads an artifact (model + manifest), reads exactly the manifest's features, scores rows.

    `device`: auto | cpu | cuda (see serving.runner.load_runner)."""

    def __init__(self, model_dir: Path, client: redis.Redis, device: str = "auto", project: str | None = None):
        """`project`: the Feast project whose online store to read (default: the one the model was trained in)."""
        self.manifest = ModelManifest.read(model_dir)
        layouts = [ViewLayout(name=view, join_keys=pin.join_keys, features=pin.features,
                              ttl=timedelta(seconds=pin.ttl_seconds) if pin.ttl_seconds else None)
                   for view, pin in self.manifest.feature_views.items()]
        self.reader = OnlineFeatureReader(client, project or self.manifest.project, layouts, list(self.manifest.feature_refs))
        self.runner = load_runner(model_dir, self.manifest, device)
        self.entity_keys = self.manifest.entity_keys
        self._user_mean_column = self.manifest.feature_refs.index(self.manifest.user_mean_feature)

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def device(self) -> str:
        return self.runner.device

    def features(self, entities: Mapping[str, np.ndarray], as_of_nanos: np.ndarray | int) -> OnlineFeatures:
        return self.reader.read(entities, as_of_nanos)

    def predict(self, entities: Mapping[str, np.ndarray], amounts: np.ndarray, as_of_nanos: np.ndarray | int) -> Scored:
        """Scores with the features of `entities` (a column per entity key) as of `as_of_nanos` (per row,
        or one instant): values older than their view's TTL are missing, as in the training set."""
        features = self.reader.read(entities, as_of_nanos)
        inputs = model_inputs(features.values, features.missing_entity, amounts, self._user_mean_column)
        request_columns = len(self.manifest.request_features)
        return Scored(scores=self.runner.probabilities(inputs), features=features,
                      request_values=inputs[:, inputs.shape[1] - request_columns:].astype(np.float64))

    def warm_up(self) -> None:
        """One model call before traffic: the first call pays for lazy set-up (CUDA context, BLAS)."""
        self.runner.probabilities(np.zeros((1, self.manifest.n_inputs), np.float32))
