"""Linear layers with pre-packed weights for inference on a CPU (a speed measure only; same maths).

`F.linear` on a CPU hands its weight to oneDNN (bf16) or MKL (fp32) afresh at every call. For bf16,
oneDNN re-lays the weight out into its blocked format at every call; for fp32 with a few rows (the
batch of a decoding step), MKL's kernel on an (out, in) weight is up to 2.6x slower than oneDNN's on
a packed one (measured on GPT-2's shapes with 8 rows, 2-core Xeon; see docs/benchmarks.md), and with
one row on an AMD CPU, where MKL's GEMV uses one core, 1.7-1.8x slower.
Decoding calls every linear layer once per token with weights that do not change, so
`packed_linears` lays each weight out once, in oneDNN's layout (the packing `torch.compile`'s CPU
backend uses for frozen weights), and routes the layer through the packed kernel until the block exits.

Results: bf16 outputs are the same bits as `F.linear` on contiguous inputs (the same oneDNN kernel,
minus the per-call re-layout); fp32 outputs differ from MKL's only by float rounding (about 1e-6
relative). Cost: a packed copy of the weights while the block is open (GPT-2 124M: +250 MB in bf16,
+500 MB in fp32), and the packing itself (0.15-0.25 s for GPT-2 124M on 2 cores), so it pays only
over many calls (a generation of 8 tokens or more, or many inference batches).

Under CPU bf16 autocast, the block packs a bf16 copy of fp32 weights and casts each input to bf16, as
autocast would before `F.linear`: the same bf16 kernel minus the per-call casts and re-layout of every
weight (BERT-base, 8 x 128 tokens: 1.2x -> 1.6x transformers, docs/benchmarks.md). Opening the block is
opting in: the weights must not change inside it. There is no cache that outlives the block, because a
change of the weights cannot be seen cheaply (the fused AdamW step does not bump `weight._version`).
"""
from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import nn

# Set to False to turn packing off everywhere (e.g. to save memory, or to compare speeds).
ENABLED = True


def packing_available(dtype: torch.dtype, device: torch.device) -> bool:
    return (ENABLED and device.type == "cpu" and dtype in (torch.float32, torch.bfloat16)
            and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def should_pack(model: nn.Module, rows: int) -> bool:
    """Worth packing for calls of `rows` rows? bf16 (weights, or autocast): always (it saves the per-call
    copy). fp32: for more than one row, and for a single row except on an Intel CPU. A single row is a
    GEMV: on an Intel Xeon MKL streams it at memory speed from the (out, in) layout (the packed kernel is
    slightly slower there), but on an AMD EPYC MKL's GEMV runs on one core and the packed kernel on
    two is 1.7-1.8x faster (SmolLM2-135M decoding, docs/benchmarks.md)."""
    p = next(model.parameters(), None)
    if p is None:
        return False
    dtype = _compute_dtype(p.dtype)
    if not packing_available(dtype, p.device):
        return False
    return dtype == torch.bfloat16 or rows > 1 or not _intel_cpu()


@functools.cache
def _intel_cpu() -> bool:
    """Is this an Intel CPU (where MKL takes its fast paths)? Read from /proc/cpuinfo; elsewhere, assume so."""
    try:
        with open("/proc/cpuinfo") as f:
            vendor = next((line for line in f if line.startswith("vendor_id")), "")
    except OSError:
        return True
    return not vendor or "GenuineIntel" in vendor


def _compute_dtype(weight_dtype: torch.dtype) -> torch.dtype:
    """The dtype a linear layer computes in: CPU autocast's when it is on, else its weight's."""
    return _cpu_autocast_dtype() or weight_dtype


def _cpu_autocast_dtype() -> torch.dtype | None:
    try:
        return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
    except (TypeError, AttributeError):   # torch < 2.4
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None


@contextlib.contextmanager
def packed_linears(model: nn.Module, rows: int, enabled: bool = True):
    """Within the block, every `nn.Linear` of `model` whose weight can be packed runs the packed kernel.

    rows: the number of rows a call will usually have (the batch of a decoding step), a hint for the
    layout. The dtype is the one the layers compute in when the block opens: CPU autocast's if it is
    on, else the weights'. For use under `torch.inference_mode` / `torch.no_grad` only: the packed
    kernel has no backward, and the weights must not change inside the block. enabled=False: a no-op.
    """
    if not (enabled and should_pack(model, rows)):
        yield
        return
    patched = []
    try:
        for module in model.modules():
            if type(module) is not nn.Linear or "forward" in module.__dict__:
                continue
            w = module.weight
            dtype = _compute_dtype(w.dtype)
            if w.device.type != "cpu" or dtype not in (torch.float32, torch.bfloat16) or w.dim() != 2:
                continue
            packed = torch.ops.mkldnn._reorder_linear_weight(w.detach().to(dtype), rows)
            bias = None if module.bias is None else module.bias.detach().to(dtype)
            module.forward = _packed_forward(module, packed, bias, dtype)
            patched.append(module)
        yield
    finally:
        for module in patched:
            del module.forward


def _packed_forward(module: nn.Linear, packed: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
    weight = module.weight

    def forward(x: torch.Tensor) -> torch.Tensor:
        computes_in = _cpu_autocast_dtype() or x.dtype     # the dtype F.linear would compute in
        if computes_in != dtype or x.device != weight.device or torch.is_grad_enabled():
            return F.linear(x, weight, module.bias)
        # Under autocast, cast the input as autocast would before F.linear.
        return torch.ops.mkldnn._linear_pointwise(x.to(dtype), packed, bias, "none", [], "")
    return forward
