"""The model's input matrix, shared by training and serving. numpy only: serving on a CPU never
imports torch (it is the largest part of a cold start)."""

from __future__ import annotations

import numpy as np

# Request-time inputs: known only when the transaction arrives, so they never come from the store.
REQUEST_FEATURES = ("amount_log", "amount_to_user_mean_7d")
# Inputs are clipped to +-INPUT_LIMIT: beyond it a value tells the model nothing more, and float32
# arithmetic through the layers would overflow to inf - inf = NaN (a non-finite score).
INPUT_LIMIT = 1e9


def model_inputs(store_values: np.ndarray, missing_views: np.ndarray, amounts: np.ndarray, user_mean_column: int) -> np.ndarray:
    """[store features (NaN -> 0), one missing flag per view, request-time features] as float32.

    amount_to_user_mean_7d is the amount relative to the user's 7-day mean amount (1.0, neutral,
    where the user has no mean yet)."""
    user_mean = store_values[:, user_mean_column]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(user_mean > 0, amounts / user_mean, 1.0)
    request = np.column_stack([np.log1p(np.maximum(amounts, 0.0)), np.nan_to_num(ratio, nan=1.0)])
    inputs = np.column_stack([np.nan_to_num(store_values, nan=0.0), missing_views.astype(np.float64), request])
    return np.clip(inputs, -INPUT_LIMIT, INPUT_LIMIT).astype(np.float32)

