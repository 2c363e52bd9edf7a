"""Model-runner benchmark: train FraudMLP for a few epochs on the best device, then time scoring
batches on every runner available here (torch CUDA, torch CPU, numpy CPU). Synthetic inputs: it
needs no data, Redis or Feast, so it runs as-is on a GPU machine.

    python -m serving.device_bench [--epochs 3] [--batches 1,64,512,4096] [--calls 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from serving.runner import NumpyMLP, TorchMLP
from training.model import FraudMLP, pick_device, save_numpy_weights

N_INPUTS = 19  # fraud_detection_v1: 15 store features + 2 missing flags + 2 request-time features


def _train(device: torch.device, epochs: int, rows: int = 200_000) -> tuple[FraudMLP, float]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(rows, N_INPUTS, generator=generator)
    labels = ((inputs[:, 0] + 0.5 * inputs[:, 5] - inputs[:, 9]) > 1.5).float()
    model = FraudMLP(N_INPUTS).to(device)
    x, y = inputs.to(device), labels.to(device)
    model.fit_scaler(x)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    started = time.perf_counter()
    for _ in range(epochs):
        for batch in torch.randperm(rows, device=device).split(512):
            optimizer.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(model(x[batch]), y[batch]).backward()
            optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return model.cpu().eval(), time.perf_counter() - started


def _time(runner, batch: int, calls: int) -> dict:
    inputs = np.random.default_rng(batch).normal(size=(batch, N_INPUTS)).astype(np.float32)
    runner.probabilities(inputs)
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        runner.probabilities(inputs)  # includes host->device copy and the result back on the host
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    return {"batch": batch, "p50_ms": round(statistics.median(latencies), 4),
            "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 4),
            "rows_per_s": round(batch / (statistics.median(latencies) / 1000))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batches", default="1,64,512,4096")
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    device = pick_device()
    model, seconds = _train(device, args.epochs)
    report = {"train_device": str(device), "train_epochs": args.epochs, "train_seconds": round(seconds, 2),
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "runners": {}}
    with tempfile.TemporaryDirectory() as folder:
        torch.save(model.state_dict(), Path(folder) / "model.pt")
        save_numpy_weights(model, Path(folder) / "weights.npz")
        runners = {"torch-cpu": TorchMLP(Path(folder) / "model.pt", N_INPUTS, "cpu")}
        if torch.cuda.is_available():
            runners["torch-cuda"] = TorchMLP(Path(folder) / "model.pt", N_INPUTS, "cuda")
        with np.load(Path(folder) / "weights.npz") as weights:
            runners["numpy-cpu"] = NumpyMLP({name: weights[name] for name in weights.files})
    for name, runner in runners.items():
        report["runners"][name] = [_time(runner, int(batch), args.calls) for batch in args.batches.split(",")]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
