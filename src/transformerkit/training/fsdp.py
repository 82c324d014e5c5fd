"""Fully sharded data parallel (PyTorch FSDP2, `fully_shard`) for the trainer: `strategy="fsdp"`.

Every process holds 1/world_size of each parameter, gradient and AdamW moment. Each transformer
block is its own unit: its parameters are all-gathered just before its forward (and again for
its backward) and freed after, so only a block or two (FSDP prefetches the next) are whole on a
device at a time; gradients are reduce-scattered back to the shards. The embeddings, the final norm
and the heads form the root unit.

The trainer keeps the caller's model as a plain (unsharded) model on the CPU and trains a sharded
copy. The plain model receives the full weights at every checkpoint (it is what `save_pretrained`
writes, so a checkpoint is one ordinary Hugging Face folder) and at the end of training, so what
callers do with the model afterwards (sampling, BLEU, scoring) needs no process group.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from ..layers import EncoderBlock

FULL_ON_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)   # rank 0 gets it, on the CPU


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's encoder and decoder blocks (DecoderBlock is an EncoderBlock), outermost first.

    Every model builds its stacks from layers.EncoderBlock / DecoderBlock (GPT's `h`, BERT's `encoder`,
    the encoder-decoders' `layers`); the seq2seq RNN has none, so it is sharded as one unit.
    """
    return [m for m in model.modules() if isinstance(m, EncoderBlock)]


def mixed_precision(device: torch.device, dtype: str) -> MixedPrecisionPolicy | None:
    """bf16 compute with fp32 shards and fp32 gradient reduction on a GPU; None (the trainer's
    autocast) elsewhere, as CPU autocast is what the single-process trainer does there."""
    if device.type == "cuda" and dtype == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return None


def shard(model: nn.Module, device: torch.device, dtype: str) -> nn.Module:
    """A sharded copy of `model` on `device`, every process starting from rank 0's weights.

    fully_shard moves each unit to the device and keeps only this process's shard, so the whole
    model is never on one device. It does not synchronise weights (unlike DDP), hence the broadcast.
    """
    _broadcast_from_rank0(model, device)
    sharded = copy.deepcopy(model)
    policy = mixed_precision(device, dtype)
    kwargs = {"mp_policy": policy} if policy is not None else {}
    mesh = torch.distributed.device_mesh.init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    for block in transformer_blocks(sharded):
        fully_shard(block, mesh=mesh, **kwargs)
    fully_shard(sharded, mesh=mesh, **kwargs)
    return sharded


@torch.no_grad()
def _broadcast_from_rank0(model: nn.Module, device: torch.device) -> None:
    """Rank 0's weights and buffers into every process's (CPU) model, one tensor at a time through `device`
    (nccl moves only device tensors). Not set_model_state_dict(broadcast_from_rank0=True): in torch 2.13 it
    fails on weights shared under several names (T5's and BART's embeddings)."""
    seen = set()
    for tensor in model.state_dict().values():
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        on_device = tensor.to(device)
        torch.distributed.broadcast(on_device, src=0)
        tensor.copy_(on_device)


@torch.no_grad()
def gather_weights(sharded: nn.Module, plain: nn.Module) -> None:
    """Copy the sharded model's weights into the plain model on every process, one tensor at a time
    (collective: every process must call it), so no device ever holds more than one whole tensor extra."""
    target = plain.state_dict()
    for name, value in sharded.state_dict().items():
        target[name].copy_(value.full_tensor() if isinstance(value, DTensor) else value)


def full_optimizer_state(sharded: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """AdamW's whole state, keyed by parameter name, on rank 0's CPU ({} elsewhere); collective."""
    return get_optimizer_state_dict(sharded, optimizer, options=FULL_ON_RANK0)


def load_full_optimizer_state(sharded: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Put a state from `full_optimizer_state` back, each process keeping its shard (every process
    passes the whole state it read from the checkpoint), whatever world size saved it."""
    set_optimizer_state_dict(sharded, optimizer, state, options=StateDictOptions(full_state_dict=True))
