"""The drift baseline of a model, saved beside it at training time: per feature, decile bin edges, the
share of training rows in each bin (missing values in a bin of their own) and a seeded reference sample
(monitoring compares each day's served and offline values with it: PSI over the bins, KS on the sample)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.monitoring import DriftBaseline, FeatureBaseline

BINS = 10
SAMPLE_SIZE = 2000


def bin_fractions(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Share of `values` in each bin of `edges` ((-inf, e0], (e0, e1], ..., (e_last, inf)), then missing (NaN)."""
    present = values[~np.isnan(values)]
    counts = np.bincount(np.searchsorted(edges, present, side="left"), minlength=len(edges) + 1)
    counts = np.append(counts, len(values) - len(present))
    return counts / max(len(values), 1)


def feature_baseline(ref: str, values: np.ndarray, seed: int = 0) -> FeatureBaseline:
    present = values[~np.isnan(values)]
    edges = np.unique(np.quantile(present, np.linspace(0, 1, BINS + 1)[1:-1])) if len(present) else np.array([])
    sample = np.random.default_rng(seed).choice(present, min(SAMPLE_SIZE, len(present)), replace=False) if len(present) else present
    return FeatureBaseline(ref=ref, edges=tuple(map(float, edges)), fractions=tuple(map(float, bin_fractions(edges, values))),
                           sample=tuple(map(float, np.sort(sample))), rows=len(values))


def save_drift_baseline(model_dir: Path, model_version: str, feature_service: str, frame: pd.DataFrame, refs: list[str]) -> Path:
    """The baseline of the rows the model was fit on (`frame`: one column per ref), written beside the model."""
    return DriftBaseline(model_version=model_version, feature_service=feature_service, features=tuple(
        feature_baseline(ref, frame[ref].to_numpy(dtype=np.float64, na_value=np.nan)) for ref in refs
    )).write(model_dir)
