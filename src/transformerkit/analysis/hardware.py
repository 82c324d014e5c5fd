"""Accelerator peaks (datasheets), a quick measurement of this machine, and model FLOPs utilisation.

`HARDWARE[name]` = {"flops": {dtype: dense FLOP/s or None when the chip has no such tensor-core
path}, "bandwidth": bytes/s, "memory": bytes, "source": ...}. Datasheets quote sparse tensor
throughput for Ampere and later; the numbers here are the dense ones (half of the sparse figure).
Bandwidths are decimal (GB/s = 1e9 B/s), memory as sold (GB = 1e9 B).
"""
from __future__ import annotations

import functools
import os
import re
import time

import torch

from ..errors import ConfigError

T, G = 1e12, 1e9

HARDWARE: dict[str, dict] = {
    "A100-40GB": {"flops": {"fp32": 19.5 * T, "tf32": 156 * T, "bf16": 312 * T, "fp16": 312 * T, "fp8": None},
                  "bandwidth": 1555 * G, "memory": 40e9,
                  "source": "datasheet: NVIDIA A100 Tensor Core GPU (2021), A100 40GB SXM"},
    "A100-80GB": {"flops": {"fp32": 19.5 * T, "tf32": 156 * T, "bf16": 312 * T, "fp16": 312 * T, "fp8": None},
                  "bandwidth": 2039 * G, "memory": 80e9,
                  "source": "datasheet: NVIDIA A100 Tensor Core GPU (2021), A100 80GB SXM"},
    "H100-SXM": {"flops": {"fp32": 67 * T, "tf32": 494.5 * T, "bf16": 989.5 * T, "fp16": 989.5 * T,
                           "fp8": 1979 * T},
                 "bandwidth": 3350 * G, "memory": 80e9,
                 "source": "datasheet: NVIDIA H100 Tensor Core GPU (2023), H100 SXM5 (sparse figures halved)"},
    "H100-PCIe": {"flops": {"fp32": 51 * T, "tf32": 378 * T, "bf16": 756.5 * T, "fp16": 756.5 * T,
                            "fp8": 1513 * T},
                  "bandwidth": 2000 * G, "memory": 80e9,
                  "source": "datasheet: NVIDIA H100 Tensor Core GPU (2023), H100 PCIe (sparse figures halved)"},
    "H200": {"flops": {"fp32": 67 * T, "tf32": 494.5 * T, "bf16": 989.5 * T, "fp16": 989.5 * T, "fp8": 1979 * T},
             "bandwidth": 4800 * G, "memory": 141e9,
             "source": "datasheet: NVIDIA H200 Tensor Core GPU (2024), H200 SXM (sparse figures halved)"},
    "V100": {"flops": {"fp32": 15.7 * T, "tf32": None, "bf16": None, "fp16": 125 * T, "fp8": None},
             "bandwidth": 900 * G, "memory": 32e9,
             "source": "datasheet: NVIDIA Tesla V100 (2020), V100 SXM2 32GB"},
    "A10": {"flops": {"fp32": 31.2 * T, "tf32": 62.5 * T, "bf16": 125 * T, "fp16": 125 * T, "fp8": None},
            "bandwidth": 600 * G, "memory": 24e9,
            "source": "datasheet: NVIDIA A10 Tensor Core GPU (2021) (sparse figures halved)"},
    "L4": {"flops": {"fp32": 30.3 * T, "tf32": 60 * T, "bf16": 121 * T, "fp16": 121 * T, "fp8": 242.5 * T},
           "bandwidth": 300 * G, "memory": 24e9,
           "source": "datasheet: NVIDIA L4 Tensor Core GPU (2023) (sparse figures halved)"},
}

# torch.cuda.get_device_name() -> table entry; first match wins (H100 PCIe before H100 SXM).
_NAME_PATTERNS = (
    (r"H200", "H200"),
    (r"H100.*PCIe", "H100-PCIe"),
    (r"H100", "H100-SXM"),
    (r"A100.*80\s*GB", "A100-80GB"),
    (r"A100", "A100-40GB"),
    (r"V100", "V100"),
    (r"\bA10\b", "A10"),
    (r"\bL4\b", "L4"),
)


def lookup_hardware(device_name: str) -> str | None:
    """The HARDWARE key for a device name such as "NVIDIA H100 80GB HBM3", or None when unknown."""
    for pattern, key in _NAME_PATTERNS:
        if re.search(pattern, device_name):
            return key
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(work, amount: float, seconds: float, device: torch.device) -> float:
    """amount per second of `work()`, repeated for about `seconds` after one warm-up call; the best
    of the timed calls (the peak, not the mean)."""
    work()
    _sync(device)
    best, deadline = float("inf"), time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        work()
        _sync(device)
        best = min(best, time.perf_counter() - start)
        if time.perf_counter() >= deadline:
            return amount / best


def measure_hardware(seconds: float = 5.0, dtype: str | None = None, device: str | torch.device | None = None,
                     size: int = 2048, copy_bytes: int = 256 * 2**20) -> dict:
    """Measure this machine's matmul FLOP/s (size^3 matmuls: 2 size^3 FLOPs each) and memory bandwidth
    (a copy of a `copy_bytes` tensor: it reads and writes copy_bytes each), in the HARDWARE entries'
    shape. dtype None measures fp32 and bf16; the time is shared between the measurements.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtypes = [dtype] if dtype else ["fp32", "bf16"]
    torch_dtypes = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    for d in dtypes:
        if d not in torch_dtypes:
            raise ConfigError(f"cannot measure dtype {d!r}; choose one of {', '.join(torch_dtypes)}")
    if seconds <= 0 or size < 1 or copy_bytes < 1:
        raise ConfigError("measure_hardware needs seconds > 0, size >= 1 and copy_bytes >= 1")
    share = seconds / (len(dtypes) + 1)
    flops = {}
    # Its own generator: a measurement in the middle of a run must not move the global RNG (the trainer
    # measures after a resumed run has restored its RNG state, and exact resume depends on that state).
    gen = torch.Generator(device=device).manual_seed(0)
    for d in dtypes:
        a = torch.randn(size, size, device=device, generator=gen).to(torch_dtypes[d])
        b = torch.randn(size, size, device=device, generator=gen).to(torch_dtypes[d])
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = d == "tf32"
        try:
            flops[d] = _rate(lambda a=a, b=b: torch.mm(a, b), 2.0 * size ** 3, share, device)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
    src = torch.empty(copy_bytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    bandwidth = _rate(lambda: dst.copy_(src), 2.0 * src.numel() * 4, share, device)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        name = torch.cuda.get_device_name(device)
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        name = f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return {"flops": flops, "bandwidth": bandwidth, "memory": total,
            "source": f"measured on {name}: {size}^3 matmuls, a {copy_bytes / 2**20:.0f} MiB copy"}


@functools.cache
def _measured_peak(device_type: str, dtype: str) -> float:
    """A quick (< 1 s) measurement, once per process and device kind."""
    size = 1024 if device_type == "cpu" else 4096
    return measure_hardware(0.5, dtype=dtype, device=device_type, size=size, copy_bytes=1 << 20)["flops"][dtype]


def peak_flops(device: str | torch.device | None = None, dtype: str = "bf16", measure: bool = True) -> float | None:
    """Peak dense FLOP/s of `device` in `dtype`: the datasheet's for a GPU in HARDWARE (matched by
    torch.cuda.get_device_name), else measured quickly (measure=True; < 1 s, cached), else None."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        key = lookup_hardware(torch.cuda.get_device_name(device))
        if key is not None and HARDWARE[key]["flops"].get(dtype):
            return HARDWARE[key]["flops"][dtype]
    if not measure:
        return None
    return _measured_peak(device.type, "fp32" if dtype == "tf32" and device.type == "cpu" else dtype)


def mfu(flops_per_token_training: float, tokens_per_s: float, peak_flops: float) -> float:
    """Model FLOPs utilisation (PaLM, Chowdhery et al. 2022, App. B): the FLOP/s the model needs at the
    observed throughput (training FLOPs per token x tokens/s), over the hardware's peak. Rematerialised
    work does not count, so MFU compares across implementations."""
    if peak_flops <= 0:
        raise ConfigError(f"peak_flops={peak_flops} must be positive (FLOP/s of the hardware)")
    return flops_per_token_training * tokens_per_s / peak_flops
