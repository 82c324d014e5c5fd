"""A truncated or corrupt weight file (an interrupted copy or download) is a CheckpointError that names
the file and says what to do, in the library and in `tkit` (one line, exit 1, no traceback)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file, save_file

import transformerkit as tk
from transformerkit.errors import CheckpointError
from transformerkit.tokenization import char_tokenizer


@pytest.fixture
def checkpoint(tmp_path):
    folder = tmp_path / "ckpt"
    tk.build("gpt2-tiny", vocab_size=40).save_pretrained(folder)
    char_tokenizer("the quick brown fox jumps over the lazy dog").save(folder)
    return folder


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_load_names_the_damaged_file(checkpoint, damage):
    weights = checkpoint / "model.safetensors"
    if damage == "truncated":
        truncate(weights)
    elif damage == "empty":
        weights.write_bytes(b"")
    else:
        weights.write_bytes(b"not a safetensors file" * 10)
    with pytest.raises(CheckpointError) as info:
        tk.load(checkpoint)
    message = str(info.value)
    assert str(weights) in message and "damaged" in message and "re-download" in message
    assert "\n" not in message


def test_a_damaged_or_missing_shard_is_named(checkpoint):
    state = load_file(checkpoint / "model.safetensors")
    names = sorted(state)
    halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for shard, keys in halves.items():
        save_file({k: state[k] for k in keys}, checkpoint / shard, metadata={"format": "pt"})
    (checkpoint / "model.safetensors").unlink()
    index = {"weight_map": {k: shard for shard, keys in halves.items() for k in keys}}
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))
    tk.load(checkpoint)                                                 # whole shards load

    second = checkpoint / "model-00002-of-00002.safetensors"
    truncate(second, keep=0.9)
    with pytest.raises(CheckpointError, match="damaged") as info:
        tk.load(checkpoint)
    assert str(second) in str(info.value)
    second.unlink()
    with pytest.raises(CheckpointError, match="missing") as info:
        tk.load(checkpoint)
    assert str(second) in str(info.value)


def test_tkit_generate_prints_one_line_without_traceback(checkpoint):
    truncate(checkpoint / "model.safetensors")
    result = subprocess.run([sys.executable, "-m", "transformerkit.cli", "generate", str(checkpoint), "--prompt", "x"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tkit: error: "), result.stderr
    assert "model.safetensors" in lines[0] and "damaged" in lines[0] and "Traceback" not in result.stderr
