"""Weight-only quantization of the linear layers, for decoding (gpt-fast's recipe, on torch's own kernels).

Batch-1 decoding reads every weight once per token, so its speed is bounded by memory bandwidth over the
weights' bytes (docs/benchmarks.md). Storing the weights in fewer bits reads fewer bytes; the activations
stay in the model's float dtype, and each matrix product dequantizes on the fly inside torch's kernel:

    int8: W[n, :] ~ scale[n] * q[n, :],  q in [-127, 127], one scale per output channel (row)
          -> torch.ops.aten._weight_int8pack_mm(x, q, scale)
    int4: W[n, g*G:(g+1)*G] ~ scale[n, g] * (q - 8) + zero[n, g],  q in [0, 15], groups of G along the input
          (asymmetric: the group's minimum and maximum map to 0 and 15)
          -> torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed q, G, scales_and_zeros)
Both run on bf16 activations, whatever the model's dtype (their fp32 paths were 20-40x slower; KERNEL_DTYPE).

Both kernels run on the CPU (int4 in groups of 32, 64, 128 or 256); `quantize` refuses other devices and
group sizes. The LM head is quantized too, in int8 by default (lm_head): on SmolLM2-135M it is 28M of the 135M
parameters, read at every token, and in int4 it costs 8.8% perplexity. A tied head gets its own
quantized copy; the embedding table stays float (a lookup reads one row per token).

A quantized model is saved by `save_pretrained` in our own layout (model_type "transformerkit", with a
"quantization" entry in config.json; transformers cannot read it) and `tk.load` rebuilds it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

SCHEMES = ("int8", "int4")
# The int kernels' fast paths take bf16 activations: with fp32 ones they were 20-40x slower (one 1536 x 576
# layer, 1 row: int8 0.58 ms and int4 1.28 ms in fp32, 0.028 and 0.031 ms in bf16; float fp32 0.05 ms). So
# every call computes in bf16 whatever the model's dtype, and hands back the input's dtype. In bf16 the
# kernels beat the fp32 matmul at every batch measured (the same layer, 2 threads, 1 to 512 rows: int8
# 0.019-2.9 ms, int4 0.024-2.6 ms, fp32 0.062-3.9 ms), and dequantizing the weight to use the float matmul
# instead was slower still (2-7 ms a call), so prompts go through the kernels too.
KERNEL_DTYPE = torch.bfloat16
INT4_GROUP_SIZES = (32, 64, 128, 256)   # what _weight_int4pack_mm_for_cpu accepts


class QuantizedLinear(nn.Module):
    """What the int8 and int4 layers share: y = x W^T + b, with W = `dequantized()`, computed by the subclass's
    int kernel (`kernel`) on bf16 activations (KERNEL_DTYPE)."""

    scheme: str
    out_features: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise ConfigError(f"{self.scheme} weights run on torch's CPU kernels only; got an input on {x.device}. "
                              "Keep a quantized model on the CPU (quantize the float model to run it elsewhere)")
        shape = x.shape
        y = self.kernel(x.reshape(-1, shape[-1]).to(KERNEL_DTYPE).contiguous()).to(x.dtype)
        y = y.reshape(*shape[:-1], self.out_features)                                 # (..., N)
        return y if self.bias is None else y + self.bias.to(y.dtype)


class Int8Linear(QuantizedLinear):
    """y = x W^T + b with W stored as int8, one scale per output channel (LLM.int8's absmax rows, without
    the outlier split). `weight` (N, K) int8 and `scales` (N,) are what is saved."""

    scheme = "int8"

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(out_features, dtype=dtype))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        w = linear.weight.detach()
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, w.dtype)
        scales = w.float().abs().amax(1).clamp(min=1e-12) / 127                     # (N,)
        module.weight.copy_(torch.round(w.float() / scales[:, None]).clamp(-127, 127).to(torch.int8))
        module.scales.copy_(scales.to(w.dtype))
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach())
        return module

    def dequantized(self) -> torch.Tensor:
        """The float weight (N, K) this layer computes with."""
        return self.weight.to(self.scales.dtype) * self.scales[:, None]

    def kernel(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x, self.weight, self.scales.to(KERNEL_DTYPE))


class Int4Linear(QuantizedLinear):
    """y = x W^T + b with W stored in 4 bits, in groups of `group_size` input features, each with its own
    scale and zero (gpt-fast's asymmetric int4). Saved: `weight` (N, K/2) uint8, two codes per byte (the
    even input feature in the low nibble), `scales` and `zeros` (N, K/G). The kernel's own packed layout
    is made from them when the weights are set (`pack`), and is not saved: it is the CPU kernel's."""

    scheme = "int4"

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype, group_size: int):
        super().__init__()
        if in_features % group_size:
            raise ConfigError(f"int4 groups of {group_size} do not divide a layer's {in_features} input features; "
                              f"pick a group size among {INT4_GROUP_SIZES} that does")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        groups = in_features // group_size
        self.register_buffer("weight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("scales", torch.ones(out_features, groups, dtype=dtype))
        self.register_buffer("zeros", torch.zeros(out_features, groups, dtype=dtype))
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype) if bias else None)
        self.register_buffer("packed", None, persistent=False)
        self.register_buffer("scales_and_zeros", None, persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _: module.pack())

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int) -> Int4Linear:
        w = linear.weight.detach()
        N, K = w.shape
        module = cls(K, N, linear.bias is not None, w.dtype, group_size)
        groups = w.float().reshape(N, K // group_size, group_size)
        low, high = groups.amin(-1), groups.amax(-1)
        scales = (high - low).clamp(min=1e-12) / 15                                   # (N, K/G)
        codes = torch.round((groups - low[..., None]) / scales[..., None]).clamp(0, 15).to(torch.uint8)
        module.set_codes(codes.reshape(N, K), scales, low + 8 * scales)
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach())
        return module

    def set_codes(self, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> None:
        """Set the weights from codes (N, K) in [0, 15] and per-group scales and zeros (N, K/G):
        W = scales * (codes - 8) + zeros."""
        codes = codes.to(torch.uint8)
        self.weight.copy_(codes[:, 0::2] | (codes[:, 1::2] << 4))
        self.scales.copy_(scales)
        self.zeros.copy_(zeros)
        self.pack()

    def codes(self) -> torch.Tensor:
        """The 4-bit codes (N, K) in [0, 15]."""
        return torch.stack([self.weight & 15, self.weight >> 4], -1).reshape(self.out_features, self.in_features)

    def pack(self) -> None:
        """The CPU kernel's layout of the codes, and its (K/G, N, 2) scales and zeros. The kernel takes N in
        multiples of 16: other layers get zero rows, cut from the output."""
        pad = -self.out_features % 16
        codes = F.pad(self.codes().to(torch.int32), (0, 0, 0, pad), value=8)
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        scales_and_zeros = torch.stack([self.scales, self.zeros], -1)                # (N, K/G, 2)
        self.scales_and_zeros = F.pad(scales_and_zeros, (0, 0, 0, 0, 0, pad)).transpose(0, 1).contiguous()

    def dequantized(self) -> torch.Tensor:
        """The float weight (N, K) this layer computes with."""
        codes = self.codes().reshape(self.out_features, -1, self.group_size).to(self.scales.dtype)
        w = (codes - 8) * self.scales[..., None] + self.zeros[..., None]
        return w.reshape(self.out_features, self.in_features)

    def kernel(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, self.group_size,
                                                         self.scales_and_zeros.to(KERNEL_DTYPE))
        return y[:, :self.out_features]                      # without the rows padded to a multiple of 16


def _check_spec(scheme: str, group_size: int) -> None:
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown quantization {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if scheme == "int4" and group_size not in INT4_GROUP_SIZES:
        raise ConfigError(f"group_size={group_size} is not one torch's int4 CPU kernel supports; use one of "
                          f"{', '.join(map(str, INT4_GROUP_SIZES))}")


def _linears(model: nn.Module, scheme: str, lm_head) -> list[tuple[nn.Module, str, nn.Linear, str]]:
    """(parent, attribute, layer, scheme) of every nn.Linear to quantize; the LM head's scheme is lm_head's
    (True: the model's, False: left in float)."""
    found = []
    for parent_name, parent in model.named_modules():
        for name, child in parent.named_children():
            if type(child) is not nn.Linear:
                continue
            if f"{parent_name}.{name}".lstrip(".") != "lm_head":
                found.append((parent, name, child, scheme))
            elif lm_head:
                found.append((parent, name, child, scheme if lm_head is True else lm_head))
    return found


def _check_head(lm_head) -> None:
    if not (isinstance(lm_head, bool) or lm_head in SCHEMES):
        raise ConfigError(f"lm_head must be True (the model's scheme), False (float) or one of {', '.join(SCHEMES)}; "
                          f"got {lm_head!r}")


@torch.no_grad()
def quantize(model: nn.Module, scheme: str = "int8", group_size: int = 64, lm_head: bool | str = "int8") -> nn.Module:
    """Replace the model's linear layers (in place) by int8 or int4 weight-only ones; returns the model.

    scheme "int8": one scale per output channel (group_size is not used). "int4": groups of group_size
    (32, 64, 128 or 256) input features. lm_head: the LM head's scheme, "int8" by default whatever the
    layers' (SmolLM2-135M's PTB perplexity: -0.3% with the head in int8 under int4 layers, +8.8% with it
    in int4; docs/quantization.md), True for the layers' scheme, False to keep it in float. For inference only:
    the model must be in eval mode with gradients off (`model.eval().requires_grad_(False)`), and on
    the CPU, where torch's kernels for these formats run.
    """
    _check_spec(scheme, group_size)
    _check_head(lm_head)
    if getattr(model, "quantization", None):
        raise ConfigError(f"this model is already quantized ({model.quantization}); quantize the float model")
    if model.training:
        raise ConfigError("quantize() is for inference: the model is in training mode; call model.eval() first "
                          "(a quantized model cannot be trained: its weights are integers)")
    if any(p.requires_grad for p in model.parameters()):
        raise ConfigError("quantize() is for inference: the model's parameters require gradients; call "
                          "model.requires_grad_(False) first (a quantized model cannot be trained)")
    devices = {p.device.type for p in model.parameters()}
    if devices != {"cpu"}:
        raise ConfigError(f"{scheme} weight-only quantization runs on torch's CPU kernels; the model is on "
                          f"{', '.join(sorted(devices))}. Move it with model.cpu() first")
    for parent, name, linear, kind in _linears(model, scheme, lm_head):
        if kind == "int8":
            setattr(parent, name, Int8Linear.from_linear(linear))
        else:
            setattr(parent, name, Int4Linear.from_linear(linear, group_size))
    model.quantization = {"scheme": scheme, "group_size": group_size if "int4" in (scheme, lm_head) else None,
                          "lm_head": lm_head}
    return model


def quantized_structure(model: nn.Module, spec: dict) -> nn.Module:
    """Give a float model the quantized layers `spec` (a saved model's "quantization" entry) describes,
    with empty weights, for a quantized checkpoint to load into."""
    scheme, group_size, lm_head = spec.get("scheme"), spec.get("group_size") or 64, spec.get("lm_head", "int8")
    _check_spec(scheme, group_size)
    _check_head(lm_head)
    for parent, name, linear, kind in _linears(model, scheme, lm_head):
        bias, dtype = linear.bias is not None, linear.weight.dtype
        if kind == "int8":
            layer = Int8Linear(linear.in_features, linear.out_features, bias, dtype)
        else:
            layer = Int4Linear(linear.in_features, linear.out_features, bias, dtype, group_size)
        setattr(parent, name, layer)
    model.quantization = dict(spec)
    return model.requires_grad_(False)


def for_inference(model: nn.Module, dtype: str = "fp32", scheme: str | None = None, group_size: int = 64) -> nn.Module:
    """A loaded model as decoding and evaluation want it (what the CLI's --dtype, --quantize and --group-size
    do): eval mode, no gradients, weights cast to dtype ("fp32" or "bf16"), then weight-only quantized
    when `scheme` is given ("int8" or "int4"; the activations keep `dtype`)."""
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if dtype not in dtypes:
        raise ConfigError(f"dtype must be one of {', '.join(dtypes)}, got {dtype!r}")
    model = model.eval().requires_grad_(False).to(dtypes[dtype])
    return quantize(model, scheme, group_size=group_size) if scheme else model


__all__ = ["for_inference", "quantize", "quantized_structure", "Int8Linear", "Int4Linear", "SCHEMES",
           "INT4_GROUP_SIZES"]
