"""Fully sharded data parallel (strategy="fsdp"): two CPU processes on gloo under torchrun against one
process on the same global batches, the checkpoint as one Hugging Face folder, exact resume, and the errors.

The torchrun runs happen once per module (about 30 s on 2 cores); the tests read their files.
"""
import json
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
from transformerkit.cli import main
from transformerkit.errors import CheckpointError, ConfigError
from transformerkit.models import build
from transformerkit.training import TrainConfig, train
from transformerkit.training.trainer import _check_inputs

# A tiny model without dropout, so one process and two compute the same thing: GPT (its output layer is
# its input embedding) or T5 (one embedding under three names: encoder, decoder, output), the latter
# translating the first 4 tokens of a row into the other 5. decay_steps is fixed so that a run stopped
# early (max_steps=STOP) follows the same schedule as the full one.
SCRIPT = """
import json, os, sys, torch
torch.set_num_threads(1)
from torch.distributed.tensor import DTensor
from transformerkit.models import build
from transformerkit.training import TrainConfig, fsdp, train

out_dir, strategy, max_steps, resume, preset = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "resume", \
    sys.argv[5]
real_shard = fsdp.shard

def recording_shard(*args, **kwargs):
    # What the optimizer will update in this process: proof that the parameters really are sharded.
    sharded = real_shard(*args, **kwargs)
    params = list(sharded.parameters())
    record = {"all_dtensors": all(isinstance(p, DTensor) for p in params),
              "local": sum(p.to_local().numel() for p in params), "total": sum(p.numel() for p in params)}
    with open(f"{out_dir}.shards-{os.environ['RANK']}.json", "w") as f:
        json.dump(record, f)
    return sharded

fsdp.shard = recording_shard
torch.manual_seed(0)
shape = dict(vocab_size=16, d_model=32, n_layer=2, n_head=2, d_ff=64, dropout=0.0, attn_dropout=0.0)
model = build(preset, **shape, max_position=9) if preset == "gpt2-tiny" else \
    build(preset, **shape, activation_dropout=0.0)
make_batch = None if preset == "gpt2-tiny" else (lambda rows: {"input_ids": rows[:, :4], "labels": rows[:, 4:]})
blocks = torch.randint(0, 16, (40, 9), generator=torch.Generator().manual_seed(0))
train(model, blocks[:32], blocks[32:], TrainConfig(
    max_steps=max_steps, batch_size=8, grad_accum=2, block_size=8, lr=1e-2, warmup_steps=2, decay_steps=6,
    log_interval=1, eval_interval=3, eval_batches=1, save_interval=3, device="cpu", out_dir=out_dir,
    strategy=strategy), resume=resume, make_batch=make_batch)
"""
STEPS, STOP = 6, 4


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run folders: 'one' (one plain process), 'two' (2 FSDP processes), 'resumed' (2 FSDP processes
    stopped after STOP steps, then resumed to STEPS), all GPT; 't5-one' and 't5-two' as 'one' and 'two'."""
    root = tmp_path_factory.mktemp("fsdp")
    script = root / "fsdp_train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    src = str(Path(transformerkit.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)

    def torchrun():
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script)]

    plain = [sys.executable, str(script)]
    launches = [(plain, "one", "ddp", STEPS, "new", "gpt2-tiny"),
                (torchrun(), "two", "fsdp", STEPS, "new", "gpt2-tiny"),
                (torchrun(), "resumed", "fsdp", STOP, "new", "gpt2-tiny"),
                (torchrun(), "resumed", "fsdp", STEPS, "resume", "gpt2-tiny"),
                (plain, "t5-one", "ddp", STEPS, "new", "t5-tiny"),
                (torchrun(), "t5-two", "fsdp", STEPS, "new", "t5-tiny")]
    for command, name, strategy, steps, resume, preset in launches:
        done = subprocess.run(command + [str(root / name), strategy, str(steps), resume, preset], env=env,
                              timeout=180, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    return root


def losses(run_dir: Path) -> dict:
    """{(step, 'loss' or 'val_loss'): value} from a run's metrics."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {(r["step"], key): r[key] for r in rows for key in ("loss", "val_loss") if key in r}


def weights(run_dir: Path) -> dict:
    return load_file(run_dir / "checkpoint" / "model.safetensors")


def test_every_parameter_is_sharded_over_the_two_processes(runs):
    records = [json.loads((runs / f"two.shards-{rank}.json").read_text()) for rank in (0, 1)]
    assert all(r["all_dtensors"] for r in records)
    total = records[0]["total"]
    assert sum(r["local"] for r in records) == total
    assert all(r["local"] < 0.6 * total for r in records)        # about half each, not a whole copy


def test_each_step_loss_equals_one_process_on_the_same_global_batch(runs):
    one, two = losses(runs / "one"), losses(runs / "two")
    assert sorted(one) == sorted(two)
    assert len([k for k in one if k[1] == "loss"]) == STEPS and (STEPS, "val_loss") in one
    for key in one:
        assert two[key] == pytest.approx(one[key], abs=1e-5), key


def test_checkpoint_is_one_hugging_face_folder_with_the_single_process_weights(runs):
    folder = runs / "two" / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "trainer_state.pt"]
    assert sorted(p.name for p in (runs / "two").iterdir() if "checkpoint" in p.name) == ["checkpoint"]
    loaded = transformerkit.load(folder).state_dict()                  # a plain model, no process group
    reference = transformerkit.load(runs / "one" / "checkpoint").state_dict()
    assert sorted(loaded) == sorted(reference)
    for name, value in reference.items():
        # The key bias (the middle third of the fused qkv bias) gets only rounding noise as its gradient
        # (softmax ignores a shift shared by all keys), and Adam scales noise up to about lr per step: 1e-4
        # there, as in the DDP test.
        if name.endswith("qkv.bias"):
            d = value.shape[0] // 3
            keys, rest = slice(d, 2 * d), torch.cat([torch.arange(d), torch.arange(2 * d, 3 * d)])
            assert torch.allclose(loaded[name][keys], value[keys], atol=1e-4), name
            assert torch.allclose(loaded[name][rest], value[rest], atol=1e-5), name
        else:
            assert torch.allclose(loaded[name], value, atol=1e-5), name


def test_t5_whose_embedding_is_shared_by_three_modules_matches_one_process(runs):
    one, two = losses(runs / "t5-one"), losses(runs / "t5-two")
    assert sorted(one) == sorted(two) and len(one) == STEPS + 2
    for key in one:
        assert two[key] == pytest.approx(one[key], abs=1e-5), key
    loaded = transformerkit.load(runs / "t5-two" / "checkpoint")
    assert loaded.lm_head.weight is loaded.encoder.embed.tokens.weight          # still one tensor
    reference = transformerkit.load(runs / "t5-one" / "checkpoint").state_dict()
    assert all(torch.allclose(value, reference[name], atol=1e-5) for name, value in loaded.state_dict().items())


def test_stopped_and_resumed_run_equals_the_uninterrupted_one(runs):
    uninterrupted, resumed = losses(runs / "two"), losses(runs / "resumed")
    for step in range(1, STEPS + 1):
        assert resumed[step, "loss"] == uninterrupted[step, "loss"], step
    assert resumed[STEPS, "val_loss"] == uninterrupted[STEPS, "val_loss"]
    a, b = weights(runs / "two"), weights(runs / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = torch.load(runs / "resumed" / "checkpoint" / "trainer_state.pt", weights_only=True)
    assert state["step"] == STEPS and state["train_config"]["strategy"] == "fsdp"


# ----------------------------------------------------------------------------- errors

def tiny_model():
    torch.manual_seed(0)
    return build("gpt2-tiny", vocab_size=16, d_model=32, n_layer=1, n_head=2, d_ff=64, max_position=9)


def tiny_config(tmp_path, **changes):
    return TrainConfig(**{**dict(max_steps=2, batch_size=4, block_size=8, warmup_steps=1, log_interval=1,
                                 eval_interval=10, save_interval=10, device="cpu", out_dir=str(tmp_path / "run")),
                          **changes})


def blocks(n=8):
    return torch.randint(0, 16, (n, 9), generator=torch.Generator().manual_seed(0))


def test_fsdp_without_torchrun_says_how_to_launch(tmp_path, monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=r"not started by torchrun.*torchrun --nproc_per_node N -m "
                                          r"transformerkit\.cli train \.\.\. --strategy fsdp"):
        train(tiny_model(), blocks(), None, tiny_config(tmp_path, strategy="fsdp"))
    assert not (tmp_path / "run").exists()                               # refused before any work


def test_unknown_strategy_is_refused():
    with pytest.raises(ConfigError, match="strategy='zero3'; choose one of ddp, fsdp"):
        TrainConfig(strategy="zero3")


def test_batch_that_does_not_split_over_the_processes_is_refused(tmp_path):
    config = tiny_config(tmp_path, strategy="fsdp", batch_size=8, grad_accum=2)
    _check_inputs(tiny_model(), blocks(), None, config, None, True, world_size=2)       # 2 x 2 x 2: fine
    with pytest.raises(ConfigError, match=r"batch_size=8 must split into 3 processes x grad_accum=2 .*"
                                          r"strategy 'fsdp'.*make it a multiple of 6"):
        _check_inputs(tiny_model(), blocks(), None, config, None, True, world_size=3)


def test_resuming_a_ddp_checkpoint_with_fsdp_names_the_strategy_to_use(tmp_path, monkeypatch):
    train(tiny_model(), blocks(), None, tiny_config(tmp_path))
    # As torchrun would start one process: FSDP then runs in a process group of one, in this process.
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    with pytest.raises(CheckpointError, match=r"saved with strategy 'ddp'.*--strategy ddp"):
        train(tiny_model(), blocks(), None, tiny_config(tmp_path, strategy="fsdp", max_steps=4), resume=True)
    assert not torch.distributed.is_initialized()                        # the trainer ended its group


@pytest.mark.parametrize("command", ["train", "pretrain", "finetune"])
def test_every_training_command_offers_the_strategy(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--strategy {ddp,fsdp}" in capsys.readouterr().out


def test_tkit_train_with_fsdp_outside_torchrun_is_a_clear_error(tmp_path, monkeypatch, capsys):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a small text to train on, repeated. " * 40)
    argv = ["train", "--data", str(corpus), "--tokenizer", "char", "--set", "n_layer=1", "d_model=32", "n_head=2",
            "d_ff=64", "--block-size", "16", "--batch-size", "4", "--max-steps", "2", "--device", "cpu",
            "--strategy", "fsdp", "--out", str(tmp_path / "run")]
    assert main(argv) == 1
    assert "torchrun --nproc_per_node N -m transformerkit.cli train ... --strategy fsdp" in capsys.readouterr().err
