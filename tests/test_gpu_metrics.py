"""serving.gpu_metrics against NVML itself: on a machine with a GPU the gauges equal NVML's readings;
without one (no library, no driver or no device) opening it says why and registers nothing."""

from __future__ import annotations

import re

import pynvml
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from serving.gpu_metrics import GpuMetrics, GpuUnavailable

pytestmark = pytest.mark.unit


def test_the_gauges_equal_nvml_readings_on_a_real_gpu():
    registry = CollectorRegistry()
    try:
        gpus = GpuMetrics.open(registry)
    except GpuUnavailable as why:
        pytest.skip(f"NVML reports no device here ({why})")
    try:
        assert gpus.devices == pynvml.nvmlDeviceGetCount() > 0
        for index in range(gpus.devices):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            labels = {"gpu": str(index)}
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            assert registry.get_sample_value("featurestack_gpu_memory_total_bytes", labels) == memory.total
            assert 0 < registry.get_sample_value("featurestack_gpu_memory_used_bytes", labels) <= memory.total
            assert 0 <= registry.get_sample_value("featurestack_gpu_utilization_ratio", labels) <= 1
            limit_watts = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000
            assert 0 < registry.get_sample_value("featurestack_gpu_power_watts", labels) <= limit_watts * 1.5
    finally:
        gpus.close()
    assert b"featurestack_gpu" not in generate_latest(registry)


def test_without_a_gpu_opening_says_why_and_registers_nothing():
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        reason = str(error)
    else:
        devices = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
        if devices:
            pytest.skip(f"NVML sees {devices} GPU(s) here: test_the_gauges_equal_nvml_readings_on_a_real_gpu covers them")
        reason = "NVML reports no GPU device"
    registry = CollectorRegistry()
    with pytest.raises(GpuUnavailable, match=re.escape(reason)):
        GpuMetrics.open(registry)
    assert b"featurestack_gpu" not in generate_latest(registry)
