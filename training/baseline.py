"""The drift baseline of a model, saved beside it at training time: per feature and source, decile bin
edges, the share of rows in each bin (missing values in a bin of their own) and a seeded reference sample
(monitoring compares each day's served and offline values with it: PSI over the bins, KS on the sample).

The reference window is the model's holdout: the most recent labelled days, the ones its metrics were
measured on. (The whole training window would include the platform's first days, when trailing 7-day
and 30-day windows are still filling up: a later day would look drifted against them for that alone.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.lake import partition_dir
from core.monitoring import DriftBaseline, FeatureBaseline

BINS = 10
SAMPLE_SIZE = 2000


def bin_fractions(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Share of `values` in each bin of `edges` ((-inf, e0], (e0, e1], ..., (e_last, inf)), then missing (NaN)."""
    present = values[~np.isnan(values)]
    counts = np.bincount(np.searchsorted(edges, present, side="left"), minlength=len(edges) + 1)
    counts = np.append(counts, len(values) - len(present))
    return counts / max(len(values), 1)


def feature_baseline(ref: str, values: np.ndarray, source: str = "served", seed: int = 0) -> FeatureBaseline:
    present = values[~np.isnan(values)]
    edges = np.unique(np.quantile(present, np.linspace(0, 1, BINS + 1)[1:-1])) if len(present) else np.array([])
    sample = np.random.default_rng(seed).choice(present, min(SAMPLE_SIZE, len(present)), replace=False) if len(present) else present
    return FeatureBaseline(ref=ref, source=source, edges=tuple(map(float, edges)), fractions=tuple(map(float, bin_fractions(edges, values))),
                           sample=tuple(map(float, np.sort(sample))), rows=len(values))


def offline_rows(offline_dir: Path, view: str, days, features: list[str]) -> pd.DataFrame:
    """The view's offline rows of `days` (only the days that have a partition)."""
    files = [file for day in days for file in sorted(partition_dir(offline_dir / view, day).glob("*.parquet"))]
    if not files:
        raise FileNotFoundError(f"no offline partition of {view} for {[str(day) for day in days]} under {offline_dir}")
    return pd.concat([pd.read_parquet(file, columns=features) for file in files], ignore_index=True)


def save_drift_baseline(model_dir: Path, model_version: str, feature_service: str, reference: pd.DataFrame, refs: list[str],
                        offline_dir: Path, days) -> Path:
    """The baseline of the reference window, written beside the model: `reference` is the training set's
    rows of `days` (one column per ref), the offline side is read from the views' partitions of `days`."""
    by_view: dict[str, list[str]] = {}
    for ref in refs:
        by_view.setdefault(ref.split(":", 1)[0], []).append(ref.split(":", 1)[1])
    offline = {view: offline_rows(offline_dir, view, days, features) for view, features in by_view.items()}
    return DriftBaseline(model_version=model_version, feature_service=feature_service, features=tuple(
        [feature_baseline(ref, reference[ref].to_numpy(dtype=np.float64, na_value=np.nan)) for ref in refs]
        + [feature_baseline(ref, offline[ref.split(":", 1)[0]][ref.split(":", 1)[1]].to_numpy(dtype=np.float64, na_value=np.nan), "offline")
           for ref in refs]
    )).write(model_dir)
