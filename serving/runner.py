"""Model runners: the trained FraudMLP on torch (CUDA when present) or, on a CPU, the same network on
numpy. A CPU server then never imports torch: cold start drops by the ~1-2.5 s `import torch` costs,
and small batches skip torch's per-call overhead. Both return the same probabilities (tested)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from core.artifacts import ModelManifest

DEVICES = ("auto", "cpu", "cuda")


def nvidia_driver_present() -> bool:
    """Whether a GPU could be there, without importing torch (its CUDA probe is the slow part)."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


class NumpyMLP:
    """FraudMLP.forward on numpy: standardize, then Linear (+ ReLU between) layers, in float32."""

    device = "cpu"
    runtime = "numpy"

    def __init__(self, weights: dict[str, np.ndarray]):
        self.mean = weights["mean"].astype(np.float32)
        self.scale = weights["scale"].astype(np.float32)
        indexes = sorted({int(m.group(1)) for name in weights if (m := re.fullmatch(r"layers\.(\d+)\.weight", name))})
        self.layers = [(weights[f"layers.{i}.weight"].T.astype(np.float32).copy(), weights[f"layers.{i}.bias"].astype(np.float32))
                       for i in indexes]
        if not self.layers:
            raise ValueError("no layers.N.weight arrays in the weights file")

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        hidden = (inputs.astype(np.float32) - self.mean) / self.scale
        for position, (weight, bias) in enumerate(self.layers):
            hidden = hidden @ weight + bias
            if position < len(self.layers) - 1:
                np.maximum(hidden, 0.0, out=hidden)
        logits = hidden[:, 0].astype(np.float64)
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


class TorchMLP:
    """The trained module itself, on CUDA when available (else CPU)."""

    runtime = "torch"

    def __init__(self, model_file: Path, n_inputs: int, device: str):
        import torch

        from training.model import FraudMLP

        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("FEATURESTACK_SERVING_DEVICE=cuda but torch sees no CUDA device")
        self._torch = torch
        self.device = "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        if self.device == "cpu":
            # One intra-op thread: small batches gain nothing from more, and spinning OpenMP threads
            # starve the event loop and the Redis I/O on a small machine.
            torch.set_num_threads(1)
        model = FraudMLP(n_inputs)
        model.load_state_dict(torch.load(model_file, map_location="cpu"))
        self.model = model.to(self.device).eval()
        self.probabilities(np.zeros((1, n_inputs), np.float32))  # warm-up (CUDA context, cuBLAS) before "ready"

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            logits = self.model(self._torch.from_numpy(inputs).to(self.device, non_blocking=True))
            return self._torch.sigmoid(logits).float().cpu().numpy()


def load_runner(model_dir: Path, manifest: ModelManifest, device: str = "auto"):
    """`device`: auto (CUDA if present, else numpy on CPU), cpu (numpy; torch CPU if the artifact has no
    numpy weights), cuda (torch on CUDA, or fail)."""
    if device not in DEVICES:
        raise ValueError(f"FEATURESTACK_SERVING_DEVICE must be one of {DEVICES}, got {device!r}")
    weights_file = model_dir / manifest.weights_file
    wants_gpu = device == "cuda" or (device == "auto" and nvidia_driver_present())
    if wants_gpu or not weights_file.exists():
        runner = TorchMLP(model_dir / manifest.model_file, manifest.n_inputs, device)
        if runner.device == "cuda" or not weights_file.exists():
            return runner
    with np.load(weights_file) as weights:
        return NumpyMLP({name: weights[name] for name in weights.files})
