"""The model pieces shared by training and serving: metrics, the input matrix, numpy weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serving.runner import NumpyMLP
from training.features import model_inputs
from training.model import FraudMLP, average_precision, roc_auc, save_numpy_weights

pytestmark = pytest.mark.unit


def _pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    positives, negatives = scores[labels == 1], scores[labels == 0]
    wins = (positives[:, None] > negatives[None, :]).sum() + 0.5 * (positives[:, None] == negatives[None, :]).sum()
    return wins / (len(positives) * len(negatives))


def test_roc_auc_equals_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # coarse: many ties
    assert roc_auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores))
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert np.isnan(roc_auc(np.zeros(5, int), np.arange(5.0)))


def test_average_precision_by_hand():
    # ranked: 1 (hit, p=1/1), 0, 1 (hit, p=2/3), 0 -> AP = (1 + 2/3) / 2
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    assert average_precision(labels, scores) == pytest.approx((1 + 2 / 3) / 2)


def test_model_inputs_add_the_amount_relative_to_the_users_mean():
    store = np.array([[2.0, 50.0], [np.nan, np.nan], [1.0, 0.0]])  # [count, amount_mean_7d]
    missing = np.array([[False], [True], [False]])
    inputs = model_inputs(store, missing, np.array([150.0, 20.0, 5.0]), user_mean_column=1)
    assert inputs.dtype == np.float32 and inputs.shape == (3, 2 + 1 + 2)
    np.testing.assert_allclose(inputs[:, -1], [3.0, 1.0, 1.0])  # no mean (missing or 0): neutral 1.0
    np.testing.assert_allclose(inputs[:, -2], np.log1p([150.0, 20.0, 5.0]), rtol=1e-6)
    np.testing.assert_array_equal(inputs[1, :2], [0.0, 0.0])  # NaN store values -> 0, flagged as missing
    assert inputs[1, 2] == 1.0


def test_numpy_weights_reproduce_a_trained_torch_model(tmp_path):
    torch.manual_seed(1)
    inputs = torch.randn(512, 7) * 10 + 3
    labels = (inputs[:, 0] + inputs[:, 3] > 6).float()
    model = FraudMLP(7, hidden=16)
    model.fit_scaler(inputs)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model(inputs), labels).backward()
        optimizer.step()
    save_numpy_weights(model, tmp_path / "weights.npz")
    with np.load(tmp_path / "weights.npz") as weights:
        runner = NumpyMLP({name: weights[name] for name in weights.files})
    with torch.inference_mode():
        expected = torch.sigmoid(model.eval()(inputs)).numpy()
    np.testing.assert_allclose(runner.probabilities(inputs.numpy()), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # runs the device benchmark end to end (~25 s): not in make test-fast
def test_the_device_benchmark_runs_on_whatever_is_here(monkeypatch, capsys):
    import json
    import sys

    from serving import device_bench

    monkeypatch.setattr(sys, "argv", ["device_bench", "--epochs", "1", "--calls", "3", "--batches", "1,8"])
    device_bench.main()
    report = json.loads(capsys.readouterr().out)
    assert report["train_device"] in ("cpu", "cuda")
    assert {"torch-cpu", "numpy-cpu"} <= set(report["runners"])
    assert [row["batch"] for row in report["runners"]["numpy-cpu"]] == [1, 8]
