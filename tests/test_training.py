"""The trainer: schedule, learning, exact resume, atomic checkpoints, metrics, data parallel.

Token data is made here (random ints or a repeating cycle), so these tests need neither
tokenizers nor corpora.
"""
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import transformerkit
from transformerkit.errors import CheckpointError, DataError
from transformerkit.models import build
from transformerkit.training import TrainConfig, batch_indices, cosine, learning_rate, noam, train

VOCAB, BLOCK = 16, 8


def tiny_model(dropout=0.1, **changes):
    torch.manual_seed(0)
    shape = dict(vocab_size=VOCAB, d_model=32, n_layer=2, n_head=2, d_ff=64, max_position=BLOCK + 1)
    return build("gpt2-tiny", **{**shape, **changes}, dropout=dropout, attn_dropout=dropout)


def random_blocks(n, seed=0):
    return torch.randint(0, VOCAB, (n, BLOCK + 1), generator=torch.Generator().manual_seed(seed))  # (n, T + 1)


def config(tmp_path, **changes):
    base = dict(max_steps=6, batch_size=4, block_size=BLOCK, lr=3e-3, min_lr=3e-4, warmup_steps=2,
                log_interval=1, eval_interval=3, eval_batches=2, save_interval=3, device="cpu",
                out_dir=str(tmp_path / "run"))
    return TrainConfig(**{**base, **changes})


def metrics(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def test_schedule_values():
    # warmup: linear, step warmup - 1 is the first at the peak
    assert cosine(0, 1.0, 0.1, warmup_steps=10, decay_steps=110) == pytest.approx(0.1)
    assert cosine(9, 1.0, 0.1, warmup_steps=10, decay_steps=110) == pytest.approx(1.0)
    # cosine: the peak at the end of warmup, halfway at the middle, min_lr at and after decay_steps
    assert cosine(10, 1.0, 0.1, warmup_steps=10, decay_steps=110) == pytest.approx(1.0)
    assert cosine(60, 1.0, 0.1, warmup_steps=10, decay_steps=110) == pytest.approx(0.55)
    assert cosine(110, 1.0, 0.1, warmup_steps=10, decay_steps=110) == pytest.approx(0.1)
    assert cosine(500, 1.0, 0.1, warmup_steps=10, decay_steps=110) == pytest.approx(0.1)
    # noam: peak lr at step warmup - 1, then decays as 1/sqrt(step)
    assert noam(3, 2.0, warmup_steps=4) == pytest.approx(2.0)
    assert noam(15, 2.0, warmup_steps=4) == pytest.approx(2.0 * math.sqrt(4 / 16))
    # TrainConfig: decay ends at max_steps unless decay_steps says otherwise
    cfg = TrainConfig(max_steps=100, lr=1.0, min_lr=0.0, warmup_steps=0)
    assert learning_rate(50, cfg) == pytest.approx(0.5)
    assert learning_rate(50, TrainConfig(max_steps=100, decay_steps=200, lr=1.0, min_lr=0.0, warmup_steps=0)) \
        == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_batch_order_is_a_function_of_seed_and_step():
    n, b = 10, 4
    stream = torch.cat([batch_indices(s, b, n, seed=7) for s in range(5)])   # 20 rows: two epochs
    assert sorted(stream[:10].tolist()) == list(range(n)) and sorted(stream[10:].tolist()) == list(range(n))
    assert not torch.equal(stream[:10], stream[10:])                          # each epoch reshuffled
    assert torch.equal(batch_indices(3, b, n, seed=7), stream[12:16])         # no hidden state
    assert not torch.equal(batch_indices(0, b, n, seed=8), stream[:4])


def test_loss_falls_on_a_learnable_sequence(tmp_path):
    cycle = torch.randperm(VOCAB, generator=torch.Generator().manual_seed(3))
    blocks = cycle.repeat(40).unfold(0, BLOCK + 1, 3)                         # (N, T + 1): next token is fixed
    cfg = config(tmp_path, max_steps=30, batch_size=8, lr=2e-2, min_lr=2e-3, warmup_steps=4, log_interval=5,
                 eval_interval=30, save_interval=30)
    summary = train(tiny_model(dropout=0.0), blocks, blocks[:16], cfg)
    losses = [r["loss"] for r in metrics(cfg.out_dir) if "loss" in r]
    assert losses[0] > 2.0                                                   # about ln(16) = 2.77 at first
    assert summary["loss"] < 0.7 and summary["val_loss"] < 0.7


def test_metrics_rows_are_json_with_expected_keys(tmp_path):
    cfg = config(tmp_path, log_interval=2, eval_interval=3)
    summary = train(tiny_model(), random_blocks(32), random_blocks(8, seed=1), cfg)
    rows = metrics(cfg.out_dir)
    train_rows = [r for r in rows if "loss" in r]
    eval_rows = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in train_rows] == [2, 4, 6]
    assert [r["step"] for r in eval_rows] == [3, 6]                          # the final eval is not repeated
    assert all(set(r) == {"step", "loss", "lr", "tokens_per_s", "elapsed", "mfu"} for r in train_rows)
    assert all(set(r) == {"step", "val_loss", "elapsed"} for r in eval_rows)
    assert all(math.isfinite(r["loss"]) and r["tokens_per_s"] > 0 for r in train_rows)
    assert summary["step"] == 6 and summary["val_loss"] == eval_rows[-1]["val_loss"]
    assert summary["tokens"] == 6 * 4 * BLOCK


class CharTokenizer:
    """Stands in for a real tokenizer: all the trainer needs is save(directory)."""

    def save(self, directory):
        (Path(directory) / "vocab.json").write_text(json.dumps({chr(97 + i): i for i in range(VOCAB)}))


def test_bf16_run_checkpoints_tokenizer_and_extra_files(tmp_path):
    cfg = config(tmp_path, max_steps=2, dtype="bf16", save_interval=2)
    summary = train(tiny_model(), random_blocks(8).int(), None, cfg, tokenizer=CharTokenizer(),
                    extra_files={"objective.json": '{"name": "causal-lm"}'})
    assert math.isfinite(summary["loss"])
    ckpt = Path(cfg.out_dir) / "checkpoint"
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors", "objective.json",
                                                      "trainer_state.pt", "vocab.json"]
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    assert state["train_config"]["dtype"] == "bf16" and state["model_config"]["d_model"] == 32
    assert load_file(ckpt / "model.safetensors")["transformer.wte.weight"].dtype == torch.float32  # autocast only


def test_resume_is_bit_identical(tmp_path):
    """Stopped at step 4 and resumed to 8 == straight to 8: weights, Adam moments, dropout RNG, data order."""
    train_data, valid_data = random_blocks(24), random_blocks(8, seed=1)
    common = dict(batch_size=4, grad_accum=2, decay_steps=8, log_interval=3, save_interval=4, eval_interval=4)

    straight = tiny_model()
    train(straight, train_data, valid_data, config(tmp_path / "a", max_steps=8, **common))

    train(tiny_model(), train_data, valid_data, config(tmp_path / "b", max_steps=4, **common))
    resumed = tiny_model()      # fresh weights: everything must come from the checkpoint
    train(resumed, train_data, valid_data, config(tmp_path / "b", max_steps=8, **common), resume=True)

    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the logged losses match too (the step-6 row averages steps 5-6, one before the stop and one after)
    keep = ("step", "loss", "lr", "val_loss")
    rows = [[{k: r[k] for k in keep if k in r} for r in metrics(tmp_path / d / "run")] for d in "ab"]
    assert rows[0] == rows[1] and len(rows[0]) == 4


def test_resume_checks_the_model_config(tmp_path):
    cfg = config(tmp_path, max_steps=2)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(tiny_model(), random_blocks(8), None, cfg, resume=True)
    train(tiny_model(), random_blocks(8), None, cfg)
    with pytest.raises(CheckpointError, match="already holds a checkpoint"):
        train(tiny_model(), random_blocks(8), None, cfg)
    with pytest.raises(CheckpointError, match=r"d_ff: checkpoint 64, model 128"):
        train(tiny_model(d_ff=128), random_blocks(8), None, config(tmp_path, max_steps=4), resume=True)


def test_bad_blocks_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="block_size=8 needs 9"):
        train(tiny_model(), torch.zeros(8, 5, dtype=torch.long), None, config(tmp_path))


def test_checkpoint_is_atomic(tmp_path, monkeypatch):
    """A save that fails halfway (weights written, trainer state not) keeps the previous checkpoint whole."""
    real_save, calls = torch.save, []

    def save_that_fails_the_second_time(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("simulated: disk full")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_that_fails_the_second_time)
    cfg = config(tmp_path, max_steps=4, save_interval=2, eval_interval=100)
    with pytest.raises(OSError, match="disk full"):
        train(tiny_model(), random_blocks(16), None, cfg)
    monkeypatch.undo()

    out = Path(cfg.out_dir)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint", "metrics.jsonl"]   # no temp dir left
    ckpt = out / "checkpoint"
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors", "trainer_state.pt"]
    assert torch.load(ckpt / "trainer_state.pt", weights_only=True)["step"] == 2
    transformerkit.load(ckpt)                                                # the weights load

    # A crash between the two renames leaves only checkpoint.old: resuming takes it back.
    os.rename(ckpt, out / "checkpoint.old")
    summary = train(tiny_model(), random_blocks(16), None, cfg, resume=True)
    assert summary["step"] == 4 and not (out / "checkpoint.old").exists()
    assert torch.load(ckpt / "trainer_state.pt", weights_only=True)["step"] == 4


DDP_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from transformerkit.models import build
from transformerkit.training import TrainConfig, train
torch.manual_seed(0)
model = build("gpt2-tiny", vocab_size=16, d_model=32, n_layer=2, n_head=2, d_ff=64, max_position=9,
              dropout=0.0, attn_dropout=0.0)
blocks = torch.randint(0, 16, (40, 9), generator=torch.Generator().manual_seed(0))
train(model, blocks[:32], blocks[32:], TrainConfig(
    max_steps=6, batch_size=8, grad_accum=2, block_size=8, lr=1e-2, warmup_steps=2, log_interval=1,
    eval_interval=3, eval_batches=1, save_interval=100, device="cpu", out_dir=sys.argv[1]))
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_data_parallel_matches_one_process(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    src = str(Path(transformerkit.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(name, None)
    launches = {"one": [sys.executable, str(script)],
                "two": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script)]}
    for name, command in launches.items():
        done = subprocess.run(command + [str(tmp_path / name)], env=env, timeout=120, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]

    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2, 3, 3, 4, 5, 6, 6]   # rank 0 only
    for a, b in zip(one, two):
        key = "loss" if "loss" in a else "val_loss"
        assert b[key] == pytest.approx(a[key], abs=1e-5)
    w1 = load_file(tmp_path / "one" / "checkpoint" / "model.safetensors")
    w2 = load_file(tmp_path / "two" / "checkpoint" / "model.safetensors")
    # 1e-4, not 1e-5: the key bias gets only rounding noise as its gradient (softmax ignores a shift
    # shared by all keys), and Adam scales noise up to about lr per step.
    assert all(torch.allclose(w1[k], w2[k], atol=1e-4) for k in w1)
