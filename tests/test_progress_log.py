"""Progress where stderr is not a terminal (`make demo > log 2>&1`): one plain line per log interval,
no carriage-return bar updates; on a terminal the live bar as before."""
from __future__ import annotations

import io
import sys

import torch

from transformerkit import progress
from transformerkit.models import build
from transformerkit.training import TrainConfig, train

VOCAB, BLOCK = 16, 8


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(tmp_path, monkeypatch, stream, **changes):
    monkeypatch.setattr(sys, "stderr", stream)
    torch.manual_seed(0)
    model = build("gpt2-tiny", vocab_size=VOCAB, d_model=16, n_layer=1, n_head=2, d_ff=32, max_position=BLOCK + 1)
    blocks = torch.randint(0, VOCAB, (16, BLOCK + 1), generator=torch.Generator().manual_seed(0))
    settings = {"max_steps": 6, "batch_size": 4, "block_size": BLOCK, "warmup_steps": 1, "log_interval": 2,
                "eval_interval": 100, "save_interval": 100, "device": "cpu", "out_dir": str(tmp_path / "run")}
    train(model, blocks, None, TrainConfig(**{**settings, **changes}))
    monkeypatch.undo()
    return stream.getvalue()


def test_log_file_gets_one_plain_line_per_log_interval(tmp_path, monkeypatch):
    assert not progress.live(io.StringIO())
    text = run(tmp_path, monkeypatch, io.StringIO())
    assert "\r" not in text
    lines = [line for line in text.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 2/6", "step 4/6", "step 6/6"], text
    assert all("loss " in line and "tok_s " in line for line in lines)


def test_terminal_gets_the_live_bar(tmp_path, monkeypatch):
    assert progress.live(Terminal())
    text = run(tmp_path, monkeypatch, Terminal())
    assert "\r" in text and "6/6" in text
    assert not [line for line in text.split("\r") if line.startswith("step ")]   # no plain lines beside the bar
