"""Shared by the benchmark scripts: machine description, source state, GEMM peak, peak memory."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: torch.device) -> dict[str, Any]:
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        pass
    info: dict[str, Any] = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": sorted({f for f in flags.split() if f.startswith(("avx512_bf16", "avx512f", "amx", "avx2"))}),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def source_state() -> dict[str, Any]:
    """The commit and any uncommitted changes under src/: the recipe may be edited between runs."""
    import hashlib
    import subprocess

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    recipe = ROOT / "src" / "synthmed" / "recipes" / "unconditional.py"
    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_src_files": [line.split(maxsplit=1)[-1]
                                  for line in git("status", "--porcelain", "--", "src").splitlines()],
        "unconditional_py_sha256": hashlib.sha256(recipe.read_bytes()).hexdigest()[:16] if recipe.exists() else None,
        "synthmed_imported_from": str(Path(__import__("synthmed").__file__).parent),
    }


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None



def gemm_peak(device: torch.device, n: int = 2048, repeats: int = 6) -> float:
    """Best of ``repeats`` n x n fp32 matmuls, GFLOP/s."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def release_free_memory() -> None:
    """Give memory that malloc keeps after frees back to the OS (glibc ``malloc_trim``), so that the resident set
    is the live memory; a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of a block: CUDA ``max_memory_allocated``; on CPU the process's peak resident set (VmHWM),
    reset at entry through ``/proc/self/clear_refs`` (Linux), after :func:`release_free_memory`.
    ``above_start_mb`` is the peak minus what was resident (allocated) at entry: the block's working memory.
    Fields are None where the platform cannot tell. Not for timed blocks: the trim makes the next allocations
    fault pages in again.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb: float | None = None
        self.above_start_mb: float | None = None
        self._start = 0.0
        self._reset = False

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        release_free_memory()
        try:
            with open("/proc/self/clear_refs", "w", encoding="utf-8") as fh:
                fh.write("5")  # 5: reset the peak RSS to the current RSS
            self._reset = True
        except OSError:
            self._reset = False
        rss = _proc_status_kib("VmRSS")
        self._start = rss / 1024 if rss is not None else 0.0
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            hwm = _proc_status_kib("VmHWM")
            self.peak_mb = hwm / 1024 if hwm is not None and self._reset else None
        if self.peak_mb is not None:
            self.above_start_mb = round(self.peak_mb - self._start, 1)
            self.peak_mb = round(self.peak_mb, 1)

    def to_dict(self) -> dict[str, Any]:
        kind = "cuda max_memory_allocated" if self.device.type == "cuda" else "process peak RSS (VmHWM)"
        return {"what": kind, "peak_mb": self.peak_mb, "above_start_mb": self.above_start_mb}


def mean_and_interval(stat: dict[str, Any] | None, digits: int = 3) -> str:
    """A :func:`synthmed.metrics.stats.mean_interval` result as a table cell: ``mean [low, high]``, the mean alone
    for one seed, ``-`` for none."""
    if not stat:
        return "-"
    if stat["interval"] is None:
        return f"{stat['mean']:.{digits}f}"
    low, high = stat["interval"]
    return f"{stat['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
