"""What a run used, sampled while it runs: peak memory and CPU time of its process tree
(psutil), utilisation and memory of its GPUs (NVML, when present)."""

from __future__ import annotations

import logging

import psutil

log = logging.getLogger(__name__)


class UsageSampler:
    def __init__(self, gpus: tuple[int, ...]):
        self.peak_rss = 0
        self._cpu: dict[int, float] = {}  # pid -> the most CPU time seen for it
        self.gpu_samples: list[float] = []
        self.gpu_memory_peak = 0
        self._nvml = None
        self._handles = []
        if gpus:
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = pynvml
                self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in gpus]
            except Exception:
                self._nvml = None

    def sample(self, members: list[psutil.Process]) -> None:
        rss = 0
        for proc in members:
            try:
                rss += proc.memory_info().rss
                times = proc.cpu_times()
                used = times.user + times.system
                self._cpu[proc.pid] = max(self._cpu.get(proc.pid, 0.0), used)
            except psutil.Error:
                continue
        self.peak_rss = max(self.peak_rss, rss)
        if self._nvml is not None:
            try:
                for handle in self._handles:
                    self.gpu_samples.append(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                    used = self._nvml.nvmlDeviceGetMemoryInfo(handle).used
                    self.gpu_memory_peak = max(self.gpu_memory_peak, used)
            except Exception as exc:
                log.debug("GPU sample failed: %s", exc)

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass

    def summary(self) -> dict:
        out = {"peak_rss_bytes": self.peak_rss, "cpu_seconds": round(sum(self._cpu.values()), 2)}
        if self.gpu_samples:
            out["gpu_utilization_mean"] = round(sum(self.gpu_samples) / len(self.gpu_samples), 1)
            out["gpu_utilization_max"] = max(self.gpu_samples)
            out["gpu_memory_peak_bytes"] = self.gpu_memory_peak
        return out
