"""Typed artifacts shared by their writers and readers.

A model artifact is a folder `<models_dir>/<feature_service>/<version>/` holding the model files and
`manifest.json` (a ModelManifest); training registers it in the model registry (core.model_registry),
whose `champion` alias names the served version (FEATURESTACK_MODEL_DIR pins one folder instead).
Training writes the manifest; serving, monitoring and the catalog read it through this module only, so
a renamed field fails at the writer's test instead of silently emptying a reader.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class ViewPin:
    """A feature view as the model saw it: its definition fingerprint and its online layout
    ((name, value type) of each join key and feature)."""

    fingerprint: str
    join_keys: tuple[tuple[str, str], ...]
    features: tuple[tuple[str, str], ...]
    # Serving treats an older value as missing, as the point-in-time join did (None: the view has no TTL).
    ttl_seconds: int | None = None


@dataclass(frozen=True)
class TrainingEvidence:
    """How the model was trained and evaluated (absent for hand-made artifacts, e.g. benchmarks)."""

    training_window: dict[str, list[str]]  # {"train": [first, last day], "test": [...]}
    rows: dict[str, int]
    metrics: dict[str, float]
    metric_floor: dict[str, float]
    trained_on: str
    epochs: int
    seconds: float
    # Labels as known when it trained: {"cutoff": ISO instant, "maturity_days": "14"} (training.labels)
    labels: dict[str, str] | None = None


@dataclass(frozen=True)
class ModelManifest:
    model: str
    version: str
    project: str
    feature_service: str
    feature_refs: tuple[str, ...]  # "view:feature", in model input order
    request_features: tuple[str, ...]
    user_mean_feature: str
    n_inputs: int
    feature_views: dict[str, ViewPin]
    model_file: str = "model.pt"
    weights_file: str = "weights.npz"
    training: TrainingEvidence | None = None
    note: str = ""
    format: int = MANIFEST_FORMAT

    def __post_init__(self) -> None:
        unknown = sorted({ref.split(":", 1)[0] for ref in self.feature_refs} - set(self.feature_views))
        if unknown:
            raise ValueError(f"model manifest {self.feature_service}/{self.version}: feature_refs name views without a pin: {unknown}")

    @property
    def features_by_view(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for ref in self.feature_refs:
            view, _, feature = ref.partition(":")
            grouped.setdefault(view, []).append(feature)
        return grouped

    @property
    def entity_keys(self) -> tuple[tuple[str, str], ...]:
        """(join key, value type) of every view, each once, in view order: the entity columns a request
        carries (user_id, merchant_id for fraud_detection_v1)."""
        keys: dict[str, str] = {}
        for pin in self.feature_views.values():
            for name, value_type in pin.join_keys:
                if keys.setdefault(name, value_type) != value_type:
                    raise ValueError(f"model manifest {self.feature_service}/{self.version}: join key {name!r} is "
                                     f"{keys[name]} in one view and {value_type} in another")
        return tuple(keys.items())

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "model manifest") -> ModelManifest:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{where}: manifest format {data.get('format')!r}, expected {MANIFEST_FORMAT} (retrain the model)")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        if missing := sorted(required - set(data)):
            raise ValueError(f"{where}: missing keys {missing}")
        if unknown := sorted(set(data) - names):
            raise ValueError(f"{where}: unknown keys {unknown}")
        try:
            training = data.get("training")
            return cls(**{
                **data,
                "feature_refs": tuple(data["feature_refs"]),
                "request_features": tuple(data["request_features"]),
                "feature_views": {
                    view: ViewPin(fingerprint=pin["fingerprint"], join_keys=tuple(map(tuple, pin["join_keys"])),
                                  features=tuple(map(tuple, pin["features"])), ttl_seconds=pin.get("ttl_seconds"))
                    for view, pin in data["feature_views"].items()
                },
                "training": TrainingEvidence(**training) if training is not None else None,
            })
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"{where}: {type(exc).__name__}: {exc}") from exc

    def write(self, model_dir: Path) -> Path:
        """Write manifest.json into model_dir atomically (a reader never sees half a manifest)."""
        path = model_dir / MANIFEST_FILE
        staging = path.with_suffix(".json.tmp")
        staging.write_text(json.dumps(self.to_json(), indent=2))
        staging.replace(path)
        return path

    @classmethod
    def read(cls, model_dir: Path) -> ModelManifest:
        path = model_dir / MANIFEST_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable manifest: {exc}") from exc
        return cls.from_json(data, where=str(path))


def artifact_dir(models_dir: Path, feature_service: str, version: str) -> Path:
    return models_dir / feature_service / version

