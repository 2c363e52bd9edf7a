"""The fraud model and the feature matrix it reads, shared by training and serving (no feast here)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from training.features import REQUEST_FEATURES, model_inputs  # noqa: F401 (re-exported)

WEIGHTS_FILE = "weights.npz"  # the same weights as plain arrays: a CPU server runs them without torch


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def save_numpy_weights(model: nn.Module, path) -> None:
    """state_dict as float32 arrays (serving.runner.NumpyMLP runs them; equal to the torch forward)."""
    np.savez(path, **{name: tensor.detach().float().cpu().numpy() for name, tensor in model.state_dict().items()})


class FraudMLP(nn.Module):
    """Standardizes its inputs itself, so serving feeds raw values exactly like training did."""

    def __init__(self, n_inputs: int, hidden: int = 64):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_inputs))
        self.register_buffer("scale", torch.ones(n_inputs))
        self.layers = nn.Sequential(
            nn.Linear(n_inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def fit_scaler(self, inputs: torch.Tensor) -> None:
        self.mean.copy_(inputs.mean(dim=0))
        self.scale.copy_(inputs.std(dim=0).clamp_min(1e-6))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.layers((inputs - self.mean) / self.scale).squeeze(-1)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum (ties get average ranks)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    _, inverse, counts = np.unique(sorted_scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=np.arange(1, len(scores) + 1))
    ranks[order] = (sums / counts)[inverse]
    positives = labels.sum()
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """PR-AUC as average precision: mean precision at each positive, by descending score."""
    order = np.argsort(-scores, kind="mergesort")
    hits = labels[order] == 1
    if not hits.any():
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: over equal-width score bins, the row-weighted gap between the mean
    score and the observed fraud rate."""
    which = np.minimum((scores * bins).astype(int), bins - 1)
    score_sums = np.bincount(which, weights=scores, minlength=bins)
    label_sums = np.bincount(which, weights=labels.astype(np.float64), minlength=bins)
    return float(np.abs(score_sums - label_sums).sum() / max(len(labels), 1))
