"""One training loop for every model and objective: AdamW, warmup + cosine, gradient
accumulation, bf16 autocast, torch.compile, data parallel or fully sharded data parallel (torchrun;
`strategy`, training/fsdp.py), periodic validation, JSON-lines metrics and atomic checkpoints that
resume bit for bit.

Exact resume rests on three choices:
- the rows of step s are a pure function of (seed, s) (`batch_indices`), so no data-loader
  state needs saving;
- the learning rate is a pure function of s (`schedule.learning_rate`);
- the checkpoint holds everything else that changes: weights, optimizer moments, and the
  RNG state of every process (dropout).

An objective plugs in through `make_batch`: it turns rows of the training tensor into the
model's keyword arguments (with `labels`), and the model returns the loss. The default is
the causal LM: a row of block_size + 1 tokens is both input and labels, the model shifts,
and the row gives block_size predictions.
"""
from __future__ import annotations

import functools
import json
import os
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..analysis.hardware import mfu
from ..config import DictMixin
from ..errors import CheckpointError, ConfigError, DataError
from ..files import atomic_folder, atomic_write, recover_folder
from ..models.base import IGNORE_INDEX
from ..progress import bar as progress_bar
from ..progress import note
from .schedule import SCHEDULES, learning_rate

CHECKPOINT = "checkpoint"
STATE_FILE = "trainer_state.pt"
METRICS_FILE = "metrics.jsonl"
STRATEGIES = ("ddp", "fsdp")      # how processes under torchrun share the work (TrainConfig.strategy)


@dataclass
class TrainConfig(DictMixin):
    max_steps: int = 1000
    batch_size: int = 32          # sequences per optimizer step, summed over all processes
    grad_accum: int = 1           # micro-batches per step on each process
    block_size: int = 128         # predictions per sequence; a causal-LM row holds block_size + 1 tokens
    lr: float = 3e-4              # peak learning rate
    min_lr: float = 3e-5          # where cosine decay ends
    warmup_steps: int = 100
    decay_steps: int = 0          # step where cosine decay reaches min_lr; 0 means max_steps
    schedule: str = "cosine"      # cosine | noam | constant
    weight_decay: float = 0.1     # AdamW, on matrices only (dim >= 2)
    betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0        # max global gradient norm; 0 turns clipping off
    eval_interval: int = 250
    eval_batches: int = 20        # validation uses the first eval_batches * batch_size rows
    log_interval: int = 10
    save_interval: int = 500
    dtype: str = "fp32"           # fp32 | bf16 (autocast; weights and optimizer stay fp32)
    compile: bool = False         # torch.compile the model
    seed: int = 1337
    device: str = "auto"          # auto (cuda if available) | cpu | cuda | cuda:N
    out_dir: str = "runs/train"
    time_limit: float = 0.0       # stop after this many seconds of training (0: none): equal budgets
    peak_flops: float = 0.0       # hardware peak FLOP/s for MFU; 0: the datasheet's for a known GPU, else measured
    strategy: str = "ddp"         # under torchrun: ddp (replicate the model) | fsdp (shard it; training/fsdp.py)

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.dtype not in ("fp32", "bf16"):
            raise ConfigError(f"TrainConfig.dtype={self.dtype!r}; choose 'fp32' or 'bf16'")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"TrainConfig.strategy={self.strategy!r}; choose one of {', '.join(STRATEGIES)} "
                              "(ddp: a copy of the model per process; fsdp: the model sharded over them)")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"TrainConfig.schedule={self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        for name in ("max_steps", "batch_size", "grad_accum", "block_size", "eval_interval",
                     "eval_batches", "log_interval", "save_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name}={getattr(self, name)} must be at least 1")
        if self.peak_flops < 0:
            raise ConfigError(f"TrainConfig.peak_flops={self.peak_flops} must be >= 0 (0: look it up or measure)")
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"TrainConfig.batch_size={self.batch_size} is not divisible by "
                              f"grad_accum={self.grad_accum}; make it a multiple")



# ----------------------------------------------------------------------------- processes and devices

@dataclass
class Distributed:
    """Where this process sits in a torchrun job (rank 0 of 1 when run plainly)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False      # we started the process group, so we end it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """Average a tensor over processes (gloo has no AVG, so SUM then divide)."""
        if self.world_size > 1:
            t = t.clone()
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t /= self.world_size
        return t


def setup(device: str, strategy: str = "ddp") -> tuple[Distributed, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1 (or for FSDP, which needs one even for a
    single process) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if strategy == "fsdp" and not ("RANK" in os.environ and "WORLD_SIZE" in os.environ):
        raise ConfigError("strategy 'fsdp' shards the model over the processes of a torchrun job, and this "
                          "process was not started by torchrun; launch it with `torchrun --nproc_per_node N "
                          "-m transformerkit.cli train ... --strategy fsdp` (N processes, one per device), or "
                          "train in one process with strategy 'ddp' (the default)")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world_size <= 1 and strategy != "fsdp":
        return Distributed(), torch.device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, owns), torch.device(device)


# ----------------------------------------------------------------------------- data order

@functools.lru_cache(maxsize=2)
def _permutation(num_rows: int, seed: int) -> torch.Tensor:
    return torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed))


def batch_indices(step: int, batch_size: int, num_rows: int, seed: int) -> torch.Tensor:
    """Row indices (batch_size,) of the global batch of optimizer step `step`.

    The rows form an endless stream of epochs, epoch e being a permutation seeded with
    seed + e; step s takes stream positions [s * batch_size, (s + 1) * batch_size). A pure
    function of (seed, step): resuming needs no loader state, and every process of a data
    parallel job sees the same global batch and takes its own slice.
    """
    positions = torch.arange(step * batch_size, (step + 1) * batch_size)
    epochs = positions // num_rows
    rows = torch.empty(batch_size, dtype=torch.long)
    for epoch in epochs.unique().tolist():
        here = epochs == epoch
        rows[here] = _permutation(num_rows, seed + epoch)[positions[here] % num_rows]
    return rows


def causal_lm_batch(rows: torch.Tensor) -> dict:
    """Rows (b, block_size + 1) -> model inputs; the model shifts labels, giving block_size predictions."""
    return {"input_ids": rows, "labels": rows}


def _check_blocks(blocks, what: str, config: TrainConfig, default_batch: bool) -> None:
    """Integer rows of any width the objective wants (int32/int16 save memory; batches are made long)."""
    integer = (torch.long, torch.int32, torch.int16, torch.uint8)
    if not isinstance(blocks, torch.Tensor) or blocks.dtype not in integer or blocks.dim() < 2:
        raise DataError(f"{what} must be an integer tensor (N, block_size + 1), got {type(blocks).__name__} "
                        f"{getattr(blocks, 'dtype', '')} {tuple(getattr(blocks, 'shape', ()))}; "
                        "build it with transformerkit.data.text.pack_blocks")
    if len(blocks) == 0:
        raise DataError(f"{what} has no rows; use a longer text or a smaller block_size")
    if default_batch and blocks.shape[1] != config.block_size + 1:
        raise DataError(f"{what} rows hold {blocks.shape[1]} tokens but block_size={config.block_size} needs "
                        f"{config.block_size + 1}; pack the data with the same block_size")


# ----------------------------------------------------------------------------- optimizer and evaluation

def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW that decays matrices only: biases and norm gains (1-D) are not pulled to zero."""
    params = [p for p in model.parameters() if p.requires_grad]   # tied weights appear once
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    # The fused kernel (CUDA, and CPU since torch 2.4) is one pass over each tensor instead of a
    # loop of small ops: 5x faster than the default for GPT-2 124M on 2 CPU cores (docs/benchmarks.md).
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=device.type in ("cuda", "cpu"))


@torch.no_grad()
def evaluate(model, blocks, config: TrainConfig, micro: int, make_batch, autocast, ddp: Distributed,
             device: torch.device, sharded: bool = False) -> float:
    """Mean loss on a fixed slice of the validation rows, so evaluations compare across steps.

    Each process takes every world_size-th row; the loss is averaged per row. Eval mode
    draws no random numbers, so validating does not change the training run. A sharded model
    gathers each block's parameters with the other processes in every forward, so there every
    process runs as many forwards as rank 0 (which has the most rows), the extra ones uncounted.
    """
    used = blocks[: config.eval_batches * config.batch_size]
    rows = used[ddp.rank::ddp.world_size]
    chunks = [(chunk, True) for chunk in rows.split(micro)]
    if sharded:
        most = -(-len(used[::ddp.world_size]) // micro)
        chunks += [(used[:1], False)] * (most - len(chunks))
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)          # (sum of row losses, rows)
    for chunk, counted in chunks:
        with autocast:
            loss = model(**make_batch(chunk.to(device, torch.long))).loss
        if counted:
            total[0] += loss.double() * len(chunk)
            total[1] += len(chunk)
    model.train()
    total = ddp.mean(total)
    return (total[0] / total[1]).item()


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(out_dir: Path, model, state: dict, tokenizer=None, extra_files: dict | None = None) -> Path:
    """Write out_dir/checkpoint so that it is always either the old one or the new one, complete.

    Everything goes into a temp folder beside it first; only then does it take the place of
    the old one (files.atomic_folder: the old folder waits at checkpoint.old between the two
    renames, which `_prepare_out_dir` takes back if a crash lands there). A failure leaves no
    temp folder.
    """
    final = out_dir / CHECKPOINT
    with atomic_folder(final) as tmp:
        model.save_pretrained(tmp)
        torch.save(state, tmp / STATE_FILE)
        if tokenizer is not None:
            tokenizer.save(tmp)
        for name, content in (extra_files or {}).items():
            (tmp / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return final


def load_run_model(out_dir: str | Path, **overrides):
    """The model of a run's checkpoint (out_dir/checkpoint) with exactly the config the run trained: the
    trainer state keeps our whole config, while a Hugging Face config.json may not hold every field (a
    Marian config has no label smoothing, a T5 one no bos_token_id). Weights from the checkpoint.
    overrides: config fields to change (a changed one makes `load_checkpoint` refuse to resume, by name)."""
    from ..config import ModelConfig
    from ..interop.hf import checkpoint_config, load_pretrained  # resolved at call time, as below

    final = Path(out_dir) / CHECKPOINT
    if not (final / STATE_FILE).exists():
        raise CheckpointError(f"no checkpoint to resume in {final} (missing {STATE_FILE}); "
                              "train without resume to start a new run there")
    trained = ModelConfig.from_dict(torch.load(final / STATE_FILE, map_location="cpu", weights_only=True)
                                    ["model_config"])
    saved, _ = checkpoint_config(final)
    changes = {k: v for k, v in trained.to_dict().items() if getattr(saved, k) != v}
    return load_pretrained(final, **{**changes, **overrides}).train()


def load_checkpoint(out_dir: Path, model) -> dict:
    """Load out_dir/checkpoint's weights into `model` (same config required); return the trainer state."""
    final = out_dir / CHECKPOINT
    if not (final / STATE_FILE).exists():
        raise CheckpointError(f"no checkpoint to resume in {final} (missing {STATE_FILE}); "
                              "train without resume to start a new run there")
    state = torch.load(final / STATE_FILE, map_location="cpu", weights_only=True)
    ours, theirs = model.config.to_dict(), state["model_config"]
    differ = [f"{k}: checkpoint {theirs.get(k)!r}, model {ours.get(k)!r}"
              for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)]
    if differ:
        raise CheckpointError(f"the checkpoint in {final} is of another model config ("
                              + "; ".join(differ) + "); build the model with the checkpoint's config, "
                              "or use another out_dir to start a new run")
    from ..interop import load_pretrained  # resolved at call time, as in Model.save_pretrained
    model.load_state_dict(load_pretrained(final).state_dict())
    return state


def _prepare_out_dir(out_dir: Path, resume: bool, ddp: Distributed) -> None:
    """A fresh run refuses to overwrite a checkpoint; rank 0 tidies what a killed save left.

    Every process checks (so all raise alike); only rank 0 changes files, and the others
    wait for it before reading the checkpoint.
    """
    final, old = out_dir / CHECKPOINT, out_dir / (CHECKPOINT + ".old")
    if not resume and (final.exists() or old.exists()):
        raise CheckpointError(f"{out_dir} already holds a checkpoint; pass resume=True to continue it, "
                              "or choose another out_dir")
    if ddp.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        recover_folder(final)      # temp folders of a killed save; checkpoint.old after a crash between its renames
        if not resume:
            (out_dir / METRICS_FILE).unlink(missing_ok=True)
    if ddp.world_size > 1:
        dist.barrier()


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep only the rows up to the checkpoint's step (a crashed run may have logged further)."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    atomic_write(path, "".join(line + "\n" for line in rows))


def _rng_state(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng_state(rng: dict, device: torch.device) -> None:
    torch.set_rng_state(rng["cpu"])
    if device.type == "cuda" and rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"], device)


# ----------------------------------------------------------------------------- the loop

@dataclass
class _RunState:
    """What the loop carries from step to step besides weights and optimizer (saved in checkpoints)."""
    step: int
    tokens: int
    elapsed_before: float         # seconds spent in earlier sessions of this run
    started: float                # perf_counter at the start of this session
    pending_loss: torch.Tensor    # sum of step losses since the last log row
    pending_steps: int
    history: list                 # [[step, train loss], ...] as logged
    val_history: list             # [[step, val loss], ...]
    saved_step: int

    @classmethod
    def fresh(cls, device: torch.device) -> _RunState:
        return cls(0, 0, 0.0, time.perf_counter(), torch.zeros((), device=device), 0, [], [], -1)

    @classmethod
    def from_dict(cls, d: dict, device: torch.device) -> _RunState:
        return cls(d["step"], d["tokens"], d["elapsed"], time.perf_counter(), d["pending_loss"].to(device),
                   d["pending_steps"], d["history"], d["val_history"], d["step"])

    def to_dict(self) -> dict:
        return {"step": self.step, "tokens": self.tokens, "elapsed": self.elapsed(),
                "pending_loss": self.pending_loss.cpu(), "pending_steps": self.pending_steps,
                "history": self.history, "val_history": self.val_history}

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def summary(self, out_dir: Path) -> dict:
        vals = [v for _, v in self.val_history]
        return {"step": self.step, "tokens": self.tokens, "elapsed": self.elapsed(),
                "tokens_per_s": self.tokens / max(self.elapsed(), 1e-9),
                "loss": self.history[-1][1] if self.history else None,
                "val_loss": vals[-1] if vals else None,
                "best_val_loss": min(vals) if vals else None,
                "checkpoint": str(out_dir / CHECKPOINT)}


def _check_inputs(model, train_blocks, valid_blocks, config: TrainConfig, extra_files, default_batch: bool,
                  world_size: int) -> None:
    """Fail before any work with a message that says what to change."""
    _check_blocks(train_blocks, "train_blocks", config, default_batch)
    if valid_blocks is not None:
        _check_blocks(valid_blocks, "valid_blocks", config, default_batch)
    if default_batch and config.block_size + 1 > model.config.max_position:
        raise ConfigError(f"block_size={config.block_size} feeds {config.block_size + 1} tokens but the model's "
                          f"context is max_position={model.config.max_position}; use block_size <= "
                          f"{model.config.max_position - 1}")
    if config.batch_size % (world_size * config.grad_accum):
        raise ConfigError(f"batch_size={config.batch_size} must split into {world_size} processes x "
                          f"grad_accum={config.grad_accum} equal micro-batches (strategy {config.strategy!r} gives "
                          f"every process an equal slice of the global batch); make it a multiple of "
                          f"{world_size * config.grad_accum}, or change the process count or grad_accum")
    reserved = {"config.json", "model.safetensors", STATE_FILE}
    for name in extra_files or {}:
        if Path(name).name != name or name in reserved:
            raise ConfigError(f"extra_files name {name!r} must be a plain file name other than "
                              f"{', '.join(sorted(reserved))}")


def _check_strategy(state: dict, config: TrainConfig, out_dir: Path) -> None:
    """The optimizer state is keyed by parameter number under DDP and by parameter name under FSDP."""
    saved = state["train_config"].get("strategy", "ddp")
    if saved != config.strategy:
        raise CheckpointError(f"the checkpoint in {out_dir / CHECKPOINT} was saved with strategy {saved!r}, and its "
                              f"optimizer state does not load under {config.strategy!r}; resume with strategy "
                              f"{saved!r} (--strategy {saved}), or start a new run in another out_dir from its weights")


def _restore(state: dict, optimizer, config: TrainConfig, ddp: Distributed, device: torch.device,
             sharded_model=None) -> _RunState:
    """Put back the optimizer, this process's RNG and the loop's counters from a checkpoint."""
    _warn_changed(state["train_config"], config)
    if sharded_model is not None:
        from . import fsdp
        fsdp.load_full_optimizer_state(sharded_model, optimizer, state["optimizer"])
    else:
        optimizer.load_state_dict(state["optimizer"])
    run = _RunState.from_dict(state["run"], device)
    if ddp.rank < len(state["rng"]):
        _set_rng_state(state["rng"][ddp.rank], device)
    else:                                   # more processes than the run that saved it
        torch.manual_seed(config.seed + ddp.rank + run.step)
    if ddp.is_main:
        _truncate_metrics(Path(config.out_dir) / METRICS_FILE, run.step)
    return run


def train(model, train_blocks: torch.Tensor, valid_blocks: torch.Tensor | None, config: TrainConfig,
          resume: bool = False, tokenizer=None, extra_files: dict | None = None,
          make_batch: Callable[[torch.Tensor], dict] | None = None,
          make_valid_batch: Callable[[torch.Tensor], dict] | None = None,
          sample_batch: Callable[[int], torch.Tensor] | None = None) -> dict:
    """Train `model` on rows of `train_blocks` for config.max_steps optimizer steps.

    train_blocks / valid_blocks: (N, block_size + 1) token ids for the default causal-LM
    `make_batch`; valid_blocks may be None (no validation). resume: continue from
    config.out_dir/checkpoint. tokenizer (anything with .save(dir)) and extra_files
    ({file name: str or bytes}) are written into every checkpoint. make_valid_batch (default
    make_batch) must be deterministic, e.g. masked-LM validation with fixed masks, so validation
    losses compare across steps and validating draws nothing from the training run's RNG.
    sample_batch(step) -> (batch_size,) row indices replaces the uniform `batch_indices`; it must be
    a pure function of the step too (translation batches pairs of similar length this way).
    Returns a summary dict.
    Under torchrun, call it in every process; only rank 0 writes files. With config.strategy 'fsdp'
    (torchrun only) a sharded copy trains and `model` itself is left on the CPU holding the trained
    weights (training/fsdp.py); with 'ddp' `model` trains in place on the device.
    """
    ddp, device = setup(config.device, config.strategy)
    try:
        return _train(model, train_blocks, valid_blocks, config, resume, tokenizer, extra_files, make_batch,
                      make_valid_batch, sample_batch, ddp, device)
    finally:
        if ddp.owns_group:
            dist.destroy_process_group()


def _train(model, train_blocks, valid_blocks, config: TrainConfig, resume, tokenizer, extra_files, make_batch,
           make_valid_batch, sample_batch, ddp: Distributed, device: torch.device) -> dict:
    out_dir = Path(config.out_dir)
    _check_inputs(model, train_blocks, valid_blocks, config, extra_files, make_batch is None, ddp.world_size)
    make_batch = make_batch or causal_lm_batch
    make_valid_batch = make_valid_batch or make_batch
    per_rank = config.batch_size // ddp.world_size
    micro = per_rank // config.grad_accum
    _prepare_out_dir(out_dir, resume, ddp)

    sharded = config.strategy == "fsdp"
    if sharded:
        from . import fsdp  # at call time: torch's FSDP modules take most of a second to import
    model.to("cpu" if sharded else device)       # under FSDP only shards go to the device (fsdp.shard)
    model.train()
    state = load_checkpoint(out_dir, model) if resume else None
    if state is not None:
        _check_strategy(state, config, out_dir)
    # The module whose parameters the optimizer updates: `model` itself, or its sharded copy.
    trained = fsdp.shard(model, device, config.dtype) if sharded else model
    optimizer = make_optimizer(trained, config, device)
    net = torch.compile(trained) if config.compile else trained
    wrapped = DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None) \
        if ddp.world_size > 1 and not sharded else net
    # Under FSDP on a GPU the bf16 casts are FSDP's mixed-precision policy rather than autocast.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=config.dtype == "bf16" and not (sharded and fsdp.mixed_precision(device, "bf16")))

    if state is None:
        run = _RunState.fresh(device)
        torch.manual_seed(config.seed + ddp.rank)          # dropout differs per process, data order does not
    else:
        run = _restore(state, optimizer, config, ddp, device, trained if sharded else None)

    # A live bar on a terminal; in a log file one plain line per log interval instead (progress.py).
    bar = progress_bar(total=config.max_steps, initial=run.step, enabled=ddp.is_main)
    flops_per_token, peak = _mfu_inputs(model, config, device)

    def step_fn(step: int) -> torch.Tensor:
        """One optimizer step; returns this process's mean micro-batch loss (detached)."""
        lr = learning_rate(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        indices = sample_batch(step) if sample_batch is not None else \
            batch_indices(step, config.batch_size, len(train_blocks), config.seed)
        rows = train_blocks[indices
                            [ddp.rank * per_rank:(ddp.rank + 1) * per_rank]]   # (per_rank, T + 1)
        total = torch.zeros((), device=device)
        tokens = torch.zeros((), dtype=torch.long, device=device)
        for i, chunk in enumerate(rows.split(micro)):
            last = i == config.grad_accum - 1
            # DDP all-reduces in the last micro-batch's backward only; FSDP reduce-scatters in each, so
            # the accumulated gradients stay sharded (skipping would hold whole gradients instead).
            sync = wrapped.no_sync() if ddp.world_size > 1 and not sharded and not last else nullcontext()
            with sync:
                batch = make_batch(chunk.to(device, torch.long))
                tokens += batch_tokens(batch, model.is_encoder_decoder, default=chunk.shape[0] * config.block_size)
                with autocast:
                    loss = wrapped(**batch).loss / config.grad_accum
                loss.backward()
            total += loss.detach()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trained.parameters(), config.grad_clip)   # DTensors: the global norm
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total, tokens

    def validate() -> None:
        if valid_blocks is None or (run.val_history and run.val_history[-1][0] == run.step):
            return
        val = evaluate(net, valid_blocks, config, micro, make_valid_batch, autocast, ddp, device, sharded)
        run.val_history.append([run.step, val])
        if ddp.is_main:
            _log(out_dir, {"step": run.step, "val_loss": val, "elapsed": run.elapsed()})
            bar.write(f"step {run.step}: val_loss {val:.4f}")

    def checkpoint() -> None:
        count_tokens()
        run.pending_loss = ddp.mean(run.pending_loss)        # same on every process, so resume is exact
        rngs = [_rng_state(device)]
        if ddp.world_size > 1:
            rngs = [None] * ddp.world_size
            dist.all_gather_object(rngs, _rng_state(device))
        if sharded:       # whole weights into `model` (written as usual) and the whole optimizer state, both by name
            fsdp.gather_weights(trained, model)
            optimizer_state = fsdp.full_optimizer_state(trained, optimizer)
        else:
            optimizer_state = optimizer.state_dict() if ddp.is_main else None
        if ddp.is_main:
            save_checkpoint(out_dir, model, {
                "step": run.step, "optimizer": optimizer_state, "rng": rngs, "run": run.to_dict(),
                "train_config": config.to_dict(), "model_config": model.config.to_dict(),
            }, tokenizer, extra_files)
        run.saved_step = run.step

    log_time = time.perf_counter()
    pending_tokens = torch.zeros((), dtype=torch.long, device=device)   # read at log time: no sync per step

    def count_tokens() -> int:
        """Tokens (all processes) since the last call, added to the run's count."""
        n = int(ddp.mean(pending_tokens.double()).item() * ddp.world_size)
        pending_tokens.zero_()
        run.tokens += n
        return n

    try:
        while run.step < config.max_steps and not (config.time_limit and run.elapsed() >= config.time_limit):
            loss, tokens = step_fn(run.step)
            run.pending_loss += loss
            pending_tokens.add_(tokens)
            run.pending_steps += 1
            run.step += 1
            bar.update(1)
            if run.step % config.log_interval == 0:
                loss = (ddp.mean(run.pending_loss) / run.pending_steps).item()
                now = time.perf_counter()
                tokens_per_s = count_tokens() / max(now - log_time, 1e-9)
                run.history.append([run.step, loss])
                run.pending_loss.zero_()
                run.pending_steps, log_time = 0, now
                if ddp.is_main:
                    row = {"step": run.step, "loss": loss, "lr": learning_rate(run.step - 1, config),
                           "tokens_per_s": tokens_per_s, "elapsed": run.elapsed()}
                    postfix = {"loss": f"{loss:.4f}", "tok_s": f"{tokens_per_s:,.0f}"}
                    if flops_per_token and peak:
                        # all processes' tokens over all processes' peak
                        row["mfu"] = mfu(flops_per_token, tokens_per_s, peak * ddp.world_size)
                        postfix["mfu"] = f"{row['mfu']:.1%}"
                    _log(out_dir, row)
                    if bar.disable:
                        note(f"step {run.step}/{config.max_steps}: " + "  ".join(f"{k} {v}" for k, v in postfix.items())
                             + f"  elapsed {row['elapsed']:.0f}s")
                    else:
                        bar.set_postfix(**postfix)
            if run.step % config.eval_interval == 0:
                validate()
            if run.step % config.save_interval == 0:
                checkpoint()
        validate()
        if run.saved_step != run.step:
            checkpoint()            # under FSDP this also leaves the final weights in `model`
    finally:
        bar.close()
    return run.summary(out_dir)


def _mfu_inputs(model, config: TrainConfig, device: torch.device) -> tuple[float | None, float | None]:
    """(training FLOPs per token, peak FLOP/s of one device) for MFU, or None where unknown.

    FLOPs per token: analysis.costs.training_flops_per_token (3 x forward, causal attention averaged) at
    block_size tokens per sequence (encoder-decoders: as many source as target tokens); None for the
    RNN. It assumes every position is computed: BERT's MLM, which projects masked positions only onto
    the vocabulary, is overestimated by about its vocabulary projection. Peak: config.peak_flops; else
    the datasheet's for a GPU in analysis.hardware.HARDWARE (bf16, or tf32/fp32 as torch's fp32 matmul
    setting says); else (a CPU or an unknown GPU) measured once per process, in under a second.
    """
    from ..analysis.costs import has_position_limit, training_flops_per_token
    from ..analysis.hardware import peak_flops

    cfg = getattr(model, "config", None)
    if cfg is None:
        return None, None
    seq = min(config.block_size, cfg.max_position) if has_position_limit(cfg) else config.block_size
    try:
        flops = training_flops_per_token(cfg, seq)
    except ConfigError:
        flops = None
    if not flops:
        return None, None
    if config.peak_flops:
        return flops, config.peak_flops
    dtype = "bf16" if config.dtype == "bf16" else \
        "tf32" if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32 else "fp32"
    return flops, peak_flops(device, dtype)


def batch_tokens(batch: dict, encoder_decoder: bool, default: int) -> torch.Tensor | int:
    """Tokens a batch really holds, for tokens/s: its real (unpadded) input tokens, plus for an
    encoder-decoder the target tokens; `default` (rows x block_size) when it has no attention mask."""
    mask = batch.get("attention_mask")
    if mask is None:
        return default
    n = mask.sum()
    labels = batch.get("labels")
    if encoder_decoder and labels is not None:
        n = n + (labels != IGNORE_INDEX).sum()
    return n


def _log(out_dir: Path, row: dict) -> None:
    with open(out_dir / METRICS_FILE, "a") as f:
        f.write(json.dumps(row) + "\n")


def _warn_changed(saved: dict, config: TrainConfig) -> None:
    """Changing settings other than length and reporting breaks the match with an uninterrupted run."""
    harmless = {"max_steps", "eval_interval", "log_interval", "save_interval", "eval_batches", "out_dir",
                "device", "compile", "time_limit", "peak_flops", "strategy"}   # strategy: _check_strategy
    saved = {**saved, "betas": tuple(saved.get("betas", ()))}
    changed = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in config.to_dict().items()
               if k not in harmless and saved.get(k) != v]
    if changed:
        warnings.warn("resuming with changed training settings (" + "; ".join(changed) + "); the run will "
                      "not match one that was never interrupted", stacklevel=4)
