"""The model as trained: loaded from its manifest, fed exactly the manifest's features."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import redis

from core.artifacts import ModelManifest, latest_promoted
from core.settings import Settings
from onlinestore.online_reader import OnlineFeatureReader, OnlineFeatures
from onlinestore.redis_layout import ViewLayout
from serving.runner import load_runner
from training.features import model_inputs


def resolve_model_dir(settings: Settings) -> Path:
    if settings.serving.model_dir:
        return Path(settings.serving.model_dir)
    promoted = latest_promoted(settings.models_dir, settings.serving.feature_service)
    if promoted is None:
        raise FileNotFoundError(
            f"no trained model for {settings.serving.feature_service} under {settings.models_dir}: run `featurestack train` "
            "or set FEATURESTACK_MODEL_DIR"
        )
    return promoted


@dataclass(frozen=True)
class Scored:
    scores: np.ndarray
    features: OnlineFeatures
    inputs: np.ndarray  # what the model was fed (training.features.model_inputs)


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
        self._user_mean_column = self.manifest.feature_refs.index(self.manifest.user_mean_feature)

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def device(self) -> str:
        return self.runner.device

    def features(self, entities: dict[str, np.ndarray], as_of_nanos: np.ndarray | int) -> OnlineFeatures:
        return self.reader.read(entities, as_of_nanos)

    def predict(self, user_ids: np.ndarray, merchant_ids: np.ndarray, amounts: np.ndarray, as_of_nanos: np.ndarray) -> Scored:
        """Scores with the features as of `as_of_nanos` (per row): values older than their view's TTL are
        missing, as in the training set."""
        features = self.reader.read({"user_id": user_ids, "merchant_id": merchant_ids}, as_of_nanos)
        inputs = model_inputs(features.values, features.missing_entity, amounts, self._user_mean_column)
        return Scored(scores=self.runner.probabilities(inputs), features=features, inputs=inputs)
