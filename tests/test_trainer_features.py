"""The trainer's switches that the other tests leave alone: gradient clipping (global norm), the time
limit (stops early, still checkpoints) and torch.compile (same losses as eager)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import transformerkit.training.trainer as trainer_module
from transformerkit.models import build
from transformerkit.training import TrainConfig, train

VOCAB, BLOCK = 16, 8


def tiny_model(dropout: float = 0.0):
    torch.manual_seed(0)
    return build("gpt2-tiny", vocab_size=VOCAB, d_model=32, n_layer=1, n_head=2, d_ff=64, max_position=BLOCK + 1,
                 dropout=dropout, attn_dropout=dropout)


def blocks(n: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, BLOCK + 1), generator=torch.Generator().manual_seed(seed))


def config(tmp_path, **changes) -> TrainConfig:
    # peak_flops given: no measurement of this machine (it would take time and draw random numbers)
    base = dict(max_steps=4, batch_size=4, block_size=BLOCK, lr=1e-2, warmup_steps=1, log_interval=1,
                eval_interval=1000, save_interval=1000, device="cpu", peak_flops=1e12, out_dir=str(tmp_path / "run"))
    return TrainConfig(**{**base, **changes})


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------ clipping

@pytest.fixture
def norms(monkeypatch):
    """Per optimizer step: (global gradient norm before clipping as clip_grad_norm_ reports it, global norm
    of the gradients the optimizer then applies)."""
    seen = {"before": [], "applied": []}
    real_clip, real_make = torch.nn.utils.clip_grad_norm_, trainer_module.make_optimizer

    def clip(parameters, max_norm, *args, **kwargs):
        total = real_clip(parameters, max_norm, *args, **kwargs)
        seen["before"].append(float(total))
        return total

    def make_optimizer(model, cfg, device):
        optimizer = real_make(model, cfg, device)
        step = optimizer.step

        def spied_step(*args, **kwargs):
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            seen["applied"].append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
            return step(*args, **kwargs)

        optimizer.step = spied_step
        return optimizer

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    monkeypatch.setattr(trainer_module, "make_optimizer", make_optimizer)
    return seen


def test_gradients_are_clipped_to_the_global_norm(tmp_path, norms):
    train(tiny_model(), blocks(), None, config(tmp_path, grad_clip=0.05))
    assert len(norms["before"]) == len(norms["applied"]) == 4
    assert min(norms["before"]) > 0.5                                 # far above the limit at every step
    # one scale for all tensors: the applied global norm is the limit (clip_grad_norm_ divides by norm + 1e-6)
    for before, applied in zip(norms["before"], norms["applied"]):
        assert applied == pytest.approx(0.05 * before / (before + 1e-6), rel=1e-5)


def test_gradients_below_the_limit_are_left_alone_and_zero_turns_clipping_off(tmp_path, norms):
    train(tiny_model(), blocks(), None, config(tmp_path / "loose", grad_clip=1e6))
    assert norms["applied"] == pytest.approx(norms["before"], rel=1e-6)
    first = norms["applied"][0]
    norms["before"].clear(), norms["applied"].clear()
    train(tiny_model(), blocks(), None, config(tmp_path / "off", grad_clip=0.0))
    assert norms["before"] == []                                      # not called at all
    assert norms["applied"][0] == pytest.approx(first, rel=1e-6)      # the same first gradient, unclipped


def test_clipping_changes_the_run(tmp_path):
    """The clipped run takes other steps than the unclipped one (the clip is applied, not only measured)."""
    clipped, loose = tiny_model(), tiny_model()
    train(clipped, blocks(), None, config(tmp_path / "a", grad_clip=0.05))
    train(loose, blocks(), None, config(tmp_path / "b", grad_clip=0.0))
    a, b = clipped.state_dict(), loose.state_dict()
    assert a.keys() == b.keys() and not all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


# ------------------------------------------------------------------------------------------ time limit

def test_time_limit_stops_early_and_still_checkpoints(tmp_path, monkeypatch):
    """A clock that advances 1 s per reading: the 5 s budget is spent after a few steps, whatever the
    machine's speed. The run stops before max_steps, validates, and saves a checkpoint at that step."""
    clock = iter(range(10**6))
    monkeypatch.setattr(trainer_module, "time", SimpleNamespace(perf_counter=lambda: float(next(clock))))
    cfg = config(tmp_path, max_steps=1000, time_limit=5.0, log_interval=1)
    summary = train(tiny_model(), blocks(), blocks(8, seed=1), cfg)
    assert 1 <= summary["step"] < 10
    assert summary["elapsed"] >= 5.0
    state = torch.load(Path(cfg.out_dir) / "checkpoint" / "trainer_state.pt", weights_only=True)
    assert state["step"] == summary["step"]
    rows = metrics(cfg.out_dir)
    assert rows[-1] == {"step": summary["step"], "val_loss": summary["val_loss"], "elapsed": rows[-1]["elapsed"]}
    assert max(r["step"] for r in rows) == summary["step"]
    # resuming with a larger budget goes on from there
    more = train(tiny_model(), blocks(), blocks(8, seed=1), config(tmp_path, max_steps=1000, time_limit=15.0),
                 resume=True)
    assert summary["step"] < more["step"] < 1000


def test_time_limit_with_a_real_clock(tmp_path):
    cfg = config(tmp_path, max_steps=100_000, time_limit=0.5, log_interval=50)
    summary = train(tiny_model(), blocks(), None, cfg)
    assert 0 < summary["step"] < 100_000 and summary["elapsed"] >= 0.5
    assert torch.load(Path(cfg.out_dir) / "checkpoint" / "trainer_state.pt", weights_only=True)["step"] \
        == summary["step"]


# ------------------------------------------------------------------------------------------ torch.compile

def _losses(run) -> list[float]:
    return [r["loss"] for r in metrics(run) if "loss" in r]


@pytest.fixture
def compile_backend(monkeypatch):
    """torch.compile with the aot_eager backend: Dynamo captures the graph and AOTAutograd builds the
    backward, as under the default backend, without generating and compiling C++ (which takes ~30 s on
    2 CPU cores for even this tiny model; test_compile_with_inductor does that)."""
    calls = []
    real = torch.compile

    def compile(model, *args, **kwargs):
        calls.append(model)
        return real(model, *args, **{**kwargs, "backend": "aot_eager"})

    monkeypatch.setattr(torch, "compile", compile)
    return calls


def test_compiled_training_equals_eager(tmp_path, compile_backend):
    torch._dynamo.reset()
    eager, compiled = tiny_model(dropout=0.0), tiny_model(dropout=0.0)
    train(eager, blocks(), None, config(tmp_path / "eager", max_steps=3))
    summary = train(compiled, blocks(), None, config(tmp_path / "compiled", max_steps=3, compile=True))
    assert compile_backend == [compiled]                         # the trainer compiled the model it trains
    assert math.isfinite(summary["loss"])
    assert _losses(tmp_path / "compiled" / "run") == pytest.approx(_losses(tmp_path / "eager" / "run"), rel=1e-5)
    a, b = eager.state_dict(), compiled.state_dict()
    assert a.keys() == b.keys()                                  # saved without the compiled wrapper's prefix
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    torch._dynamo.reset()


def _c_compiler() -> str | None:
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@pytest.mark.slow
@pytest.mark.skipif(_c_compiler() is None, reason="torch.compile's default backend (inductor) builds C++ on a "
                    "CPU and no C compiler (cc, gcc, clang) is on PATH")
def test_compile_with_inductor_runs_a_step_like_eager(tmp_path):
    """The default backend, as `tkit train --compile` uses it: one step, the loss of eager within fp32
    rounding of a reordered computation (~30 s to compile on 2 CPU cores)."""
    torch._dynamo.reset()
    eager = train(tiny_model(), blocks(), None, config(tmp_path / "eager", max_steps=1))
    compiled = train(tiny_model(), blocks(), None, config(tmp_path / "compiled", max_steps=1, compile=True))
    assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-5)
    torch._dynamo.reset()
