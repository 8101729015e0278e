"""Memory figures of a training run: GPU allocated/reserved on CUDA, process RSS on CPU."""
from __future__ import annotations

import resource
import sys
import threading
from pathlib import Path
from typing import Any

GB = 1024 ** 3


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; else the lifetime peak)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process over its lifetime (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class RssSampler:
    """Samples this process's RSS in a background thread, so the peak of one phase (training)
    is known even though the kernel's ru_maxrss cannot be reset after model loading."""

    def __init__(self, interval_s: float = 0.25):
        self.interval_s = interval_s
        self.start_bytes = 0
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, rss_bytes())

    def __enter__(self) -> "RssSampler":
        self.start_bytes = self.peak_bytes = rss_bytes()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_bytes = max(self.peak_bytes, rss_bytes())


def cuda_reset_peak() -> dict[str, Any]:
    """Reset CUDA's peak counters and return what is held before training (seed 04's 'start' figure)."""
    import torch
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    props = torch.cuda.get_device_properties(0)
    return {"gpu_name": props.name, "gpu_total_gb": round(props.total_memory / GB, 3),
            "reserved_before_train_gb": round(torch.cuda.memory_reserved() / GB, 3),
            "allocated_before_train_gb": round(torch.cuda.memory_allocated() / GB, 3)}


def cuda_peak(start: dict[str, Any]) -> dict[str, Any]:
    """Peak GPU memory of the phase since `cuda_reset_peak`: allocated, reserved, the part used by
    training (peak reserved minus reserved before) and the share of the card."""
    import torch
    torch.cuda.synchronize()
    peak_alloc = torch.cuda.max_memory_allocated() / GB
    peak_res = torch.cuda.max_memory_reserved() / GB
    total = start["gpu_total_gb"]
    return {**start, "device": "cuda",
            "peak_allocated_gb": round(peak_alloc, 3), "peak_reserved_gb": round(peak_res, 3),
            "reserved_for_training_gb": round(peak_res - start["reserved_before_train_gb"], 3),
            "peak_reserved_pct": round(100 * peak_res / total, 2) if total else None}


def cpu_figures(sampler: RssSampler) -> dict[str, Any]:
    """RSS before training, the sampled training peak and the process's lifetime peak (GB)."""
    return {"device": "cpu", "rss_before_train_gb": round(sampler.start_bytes / GB, 3),
            "peak_rss_train_gb": round(sampler.peak_bytes / GB, 3),
            "peak_rss_process_gb": round(max(peak_rss_bytes(), sampler.peak_bytes) / GB, 3)}
