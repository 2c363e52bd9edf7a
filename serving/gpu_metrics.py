"""GPU use for Prometheus through NVML (nvidia-ml-py): utilization, memory and power of every GPU NVML
sees (in a container: the ones it was given), read at scrape time.

Without a GPU (no driver: NVMLError_LibraryNotFound, or no device) `GpuMetrics.open` raises
GpuUnavailable and serving runs with no GPU metrics. A reading a device does not support (power on some
boards, utilization on a MIG slice) is left out of that scrape, not reported as 0.
"""

from __future__ import annotations

import pynvml
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class GpuUnavailable(RuntimeError):
    """NVML cannot be used here (no library, no driver, or no device)."""


class GpuMetrics(Collector):
    def __init__(self, handles: list, registry: CollectorRegistry):
        self._handles = handles
        self._registry = registry
        registry.register(self)

    @classmethod
    def open(cls, registry: CollectorRegistry) -> GpuMetrics:
        """Start NVML and register the collector; GpuUnavailable (saying why) when there is nothing to read."""
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            raise GpuUnavailable(f"NVML: {error}") from None
        try:
            count = pynvml.nvmlDeviceGetCount()
            if count == 0:
                raise GpuUnavailable("NVML reports no GPU device")
            return cls([pynvml.nvmlDeviceGetHandleByIndex(index) for index in range(count)], registry)
        except BaseException:
            pynvml.nvmlShutdown()
            raise

    @property
    def devices(self) -> int:
        return len(self._handles)

    def collect(self):
        utilization = GaugeMetricFamily("featurestack_gpu_utilization_ratio",
                                        "Share of the last sample period (1/6 s to 1 s, by device) in which a kernel ran "
                                        "on the GPU (NVML utilization.gpu / 100)", labels=["gpu"])
        memory_used = GaugeMetricFamily("featurestack_gpu_memory_used_bytes", "GPU memory in use (all processes)", labels=["gpu"])
        memory_total = GaugeMetricFamily("featurestack_gpu_memory_total_bytes", "GPU memory installed", labels=["gpu"])
        power = GaugeMetricFamily("featurestack_gpu_power_watts", "GPU board power draw", labels=["gpu"])
        for index, handle in enumerate(self._handles):
            gpu = [str(index)]
            for family, read in ((utilization, lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100),
                                 (memory_used, lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used),
                                 (memory_total, lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                                 (power, lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000)):  # milliwatts
                try:
                    family.add_metric(gpu, float(read()))
                except pynvml.NVMLError:  # not supported on this device, or the GPU fell off the bus: no sample
                    continue
        yield from (utilization, memory_used, memory_total, power)

    def describe(self):
        return []

    def close(self) -> None:
        self._registry.unregister(self)
        pynvml.nvmlShutdown()
