"""The model registry (MLflow): registered versions of a model, the `champion` and `challenger` aliases,
and each version's serving artifact fetched to a local folder.

A registered version's MLflow model carries our serving artifact as its extra files: the folder
`featurestack train` writes (manifest.json, model.pt, weights.npz; see core.artifacts). Training
registers it, the promotion gate moves the aliases, serving resolves `models:/<name>@<alias>` to a
local folder that ModelManifest.read and serving's runners read, and the catalog lists versions and
aliases. mlflow is imported lazily: the CLI and the catalog start without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHAMPION = "champion"
CHALLENGER = "challenger"
# Where the serving artifact sits inside a registered version's model (mlflow's folder for extra_files).
ARTIFACT_SUBDIR = "extra_files"
# Registered-model tag: the versions that held `champion`, oldest first (a rollback pops the last).
CHAMPION_HISTORY_TAG = "champion_history"
# Model-version tags written when the alias moves (ISO time; the reason as given).
PROMOTED_AT_TAG = "promoted_at"
PROMOTION_NOTE_TAG = "promotion_note"
ROLLED_BACK_AT_TAG = "rolled_back_at"


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str  # the registry's version number, as text
    run_id: str
    aliases: tuple[str, ...]
    tags: dict[str, str]
    created_ms: int


@dataclass(frozen=True)
class ResolvedModel:
    """A version fetched for serving: `model_dir` holds manifest.json and the model files."""

    version: ModelVersion
    model_dir: Path


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """A run's page on the MLflow tracking UI at `ui_url`."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def parse_model_uri(uri: str) -> tuple[str, str]:
    """`models:/<name>@<alias>` -> (name, alias). Only aliases: serving follows an alias as it moves."""
    prefix = "models:/"
    name, sep, alias = uri[len(prefix):].partition("@") if uri.startswith(prefix) else ("", "", "")
    if not (name and sep and alias) or "/" in name:
        raise ValueError(f"model URI must look like models:/<name>@<alias>, got {uri!r}")
    return name, alias


class ModelRegistry:
    """The registry at `tracking_uri` (sqlite:///... embedded, postgresql+psycopg://... deployed).

    `cache_dir` keeps fetched versions (one folder per name/version/run, written atomically)."""

    def __init__(self, tracking_uri: str, cache_dir: Path):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in logs
        from mlflow import MlflowClient

        if tracking_uri.startswith("sqlite:///"):  # sqlite creates the file, not its folder
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)

        self.tracking_uri = tracking_uri
        self.cache_dir = cache_dir
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @contextlib.contextmanager
    def fluent(self) -> Iterator[None]:
        """mlflow's module-level API (start_run, log_*, register_model) on this store for the block.
        MLflow keeps that URI in the process environment (MLFLOW_TRACKING_URI): what was there is put
        back after, so a later load_settings() in this process does not read this store's URI."""
        import mlflow

        previous = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)

    def _version(self, raw) -> ModelVersion:
        return ModelVersion(name=raw.name, version=str(raw.version), run_id=raw.run_id or "",
                            aliases=tuple(sorted(raw.aliases or ())), tags=dict(raw.tags or {}),
                            created_ms=int(raw.creation_timestamp or 0))

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of `name`, newest first (empty when the model was never registered)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            return []
        # get_model_version fills in aliases; search results of some stores leave them empty.
        found = self.client.search_model_versions(f"name = '{name}'")
        return sorted((self._version(self.client.get_model_version(name, raw.version)) for raw in found),
                      key=lambda v: int(v.version), reverse=True)

    def get(self, name: str, version: str) -> ModelVersion:
        return self._version(self.client.get_model_version(name, version))

    def by_alias(self, name: str, alias: str) -> ModelVersion | None:
        """The version `alias` points at, or None when the alias (or the model) does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            return self._version(self.client.get_model_version_by_alias(name, alias))
        except MlflowException:
            return None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        self.client.delete_registered_model_alias(name, alias)

    def fetch(self, version: ModelVersion) -> ResolvedModel:
        """The version's serving artifact as a local folder (downloaded once, then read from the cache)."""
        # The run id too: another store (a fresh sqlite, a test's) numbers its versions from 1 again.
        target = self.cache_dir / version.name / f"{version.version}-{version.run_id}"
        if not (target / "manifest.json").is_file():
            import mlflow.artifacts

            self.cache_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{version.name}-{version.version}-", dir=self.cache_dir))
            try:
                # The version's storage location from our client: mlflow resolves a models:/ URI in the
                # process-wide default registry whatever registry_uri says (./mlflow.db when none is set).
                location = self.client.get_model_version_download_uri(version.name, version.version)
                downloaded = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(staging),
                                                                      tracking_uri=self.tracking_uri))
                if not (downloaded / ARTIFACT_SUBDIR / "manifest.json").is_file():
                    raise ValueError(f"models:/{version.name}/{version.version} carries no featurestack serving artifact "
                                     f"({ARTIFACT_SUBDIR}/manifest.json): register it with `featurestack train`")
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists():  # a half-written folder from an interrupted fetch
                    shutil.rmtree(target)
                (downloaded / ARTIFACT_SUBDIR).replace(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return ResolvedModel(version=version, model_dir=target)

    def resolve(self, uri: str) -> ResolvedModel | None:
        """`models:/<name>@<alias>` fetched, or None when the alias is not set."""
        name, alias = parse_model_uri(uri)
        version = self.by_alias(name, alias)
        return self.fetch(version) if version is not None else None

    def set_version_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, key, value)

    def champion_history(self, name: str) -> list[str]:
        """The versions that held `champion`, oldest first (the last is the current champion)."""
        raw = self.client.get_registered_model(name).tags.get(CHAMPION_HISTORY_TAG, "[]")
        return [str(version) for version in json.loads(raw)]

    def _moved_at(self) -> str:
        from datetime import datetime, timezone

        return datetime.now(timezone.utc).isoformat(timespec="seconds")

    def promote(self, name: str, version: str, note: str) -> None:
        """Point `champion` at `version` (and drop `challenger` when it named that version); the
        previous champion stays in the history for `rollback`."""
        history = self.champion_history(name)
        if history and history[-1] == version:
            raise ValueError(f"{name} version {version} is already the champion")
        self.set_alias(name, CHAMPION, version)
        self.client.set_registered_model_tag(name, CHAMPION_HISTORY_TAG, json.dumps([*history, version]))
        self.set_version_tags(name, version, {PROMOTED_AT_TAG: self._moved_at(), PROMOTION_NOTE_TAG: note})
        challenger = self.by_alias(name, CHALLENGER)
        if challenger is not None and challenger.version == version:
            self.delete_alias(name, CHALLENGER)

    def rollback(self, name: str) -> tuple[str, str]:
        """Move `champion` back to the previous champion; returns (from, to). A clear error when there is
        no previous champion."""
        history = self.champion_history(name)
        current = self.by_alias(name, CHAMPION)
        if current is None:
            raise ValueError(f"{name} has no champion to roll back")
        if len(history) < 2 or history[-1] != current.version:
            raise ValueError(f"{name}: no previous champion to roll back to (champion history: {history or 'empty'})")
        previous = history[-2]
        self.set_alias(name, CHAMPION, previous)
        self.client.set_registered_model_tag(name, CHAMPION_HISTORY_TAG, json.dumps(history[:-1]))
        self.set_version_tags(name, current.version, {ROLLED_BACK_AT_TAG: self._moved_at()})
        return current.version, previous
