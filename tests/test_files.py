"""files.py, the one way to write a file: a failure midway leaves the old file whole and no temporary
behind; other files in a folder are kept; and every writer in the library goes through it."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

import transformerkit as tk
from transformerkit.files import atomic_files, atomic_folder, atomic_path, atomic_write, recover_folder
from transformerkit.tokenization import char_tokenizer

SRC = Path(__file__).resolve().parents[1] / "src" / "transformerkit"


class Boom(Exception):
    pass


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_write_replaces_and_honours_the_umask(tmp_path):
    target = tmp_path / "sub" / "notes.txt"
    atomic_write(target, "first")
    atomic_write(target, b"second \xff")
    assert target.read_bytes() == b"second \xff"
    old = os.umask(0o022)
    try:
        atomic_write(target, "third")
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o644          # like a plain open(), not mkstemp's 0o600
    assert hidden(target.parent) == []


def test_failure_mid_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "results.json"
    target.write_text('{"old": true}')
    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_text('{"new": tr')                     # half written, then the disk fills up
        raise Boom
    assert target.read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_atomic_files_replace_together_and_keep_the_others(tmp_path):
    (tmp_path / "config.json").write_text("old config")
    (tmp_path / "model.safetensors").write_bytes(b"old weights")
    (tmp_path / "tokenizer.json").write_text("kept")
    with pytest.raises(Boom), atomic_files(tmp_path) as tmp:
        (tmp / "config.json").write_text("new config")
        (tmp / "model.safetensors").write_bytes(b"new wei")
        raise Boom
    assert (tmp_path / "config.json").read_text() == "old config"         # none replaced before all are done
    assert (tmp_path / "model.safetensors").read_bytes() == b"old weights"
    assert hidden(tmp_path) == []
    with atomic_files(tmp_path) as tmp:
        (tmp / "config.json").write_text("new config")
        (tmp / "model.safetensors").write_bytes(b"new weights")
    assert (tmp_path / "config.json").read_text() == "new config"
    assert (tmp_path / "tokenizer.json").read_text() == "kept"
    assert hidden(tmp_path) == []


def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "checkpoint"
    target.mkdir()
    (target / "a").write_text("old")
    with pytest.raises(Boom), atomic_folder(target) as tmp:
        (tmp / "a").write_text("new")
        raise Boom
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
    assert (target / "a").read_text() == "old"
    with atomic_folder(target) as tmp:
        (tmp / "b").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b"]                # the old folder is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]     # no .old, no temp
    with atomic_folder(target, replace=False) as tmp:                       # another writer came first
        (tmp / "c").write_text("late")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_recover_folder_takes_back_the_old_copy_and_removes_temps(tmp_path):
    target = tmp_path / "checkpoint"
    (tmp_path / "checkpoint.old").mkdir()                    # killed between the two renames
    (tmp_path / ".checkpoint.tmp-1234").mkdir()              # killed while writing
    recover_folder(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_save_pretrained_failing_mid_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    from transformerkit.interop import hf

    folder = tmp_path / "ckpt"
    old = tk.build("gpt2-tiny", vocab_size=40)
    old.save_pretrained(folder)
    char_tokenizer("abc").save(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def half_then_fail(tensors, path, metadata=None):
        Path(path).write_bytes(b"\x00" * 100)
        raise OSError("simulated: disk full")

    monkeypatch.setattr(hf, "save_file", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        tk.build("gpt2-tiny", vocab_size=40).save_pretrained(folder)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    loaded = tk.load(folder)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), old.state_dict().values()))


def test_tokenizer_save_failing_midway_keeps_the_old_files(tmp_path, monkeypatch):
    folder = tmp_path / "tok"
    char_tokenizer("abc").save(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real_dumps = json.dumps

    def fail_on_the_config(obj, *args, **kwargs):
        if isinstance(obj, dict) and "unk_token" in obj:     # tokenizer_config.json, after tokenizer.json
            raise OSError("simulated: disk full")
        return real_dumps(obj, *args, **kwargs)

    monkeypatch.setattr(json, "dumps", fail_on_the_config)
    with pytest.raises(OSError, match="disk full"):
        char_tokenizer("a different vocabulary").save(folder)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_figure_failing_mid_write_keeps_the_old_picture(tmp_path):
    from transformerkit.viz.figures import pyplot, save_figure

    plt = pyplot()
    save_figure(plt.figure(), tmp_path / "plot.png")
    before = (tmp_path / "plot.png").read_bytes()
    fig = plt.figure()

    def half_then_fail(path, **kwargs):
        Path(path).write_bytes(before[:10])
        raise OSError("simulated: disk full")

    fig.savefig = half_then_fail
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes() == before
    assert hidden(tmp_path) == []


# Renames and temp files are files.py's job; a writer elsewhere would bring back its own copy of it.
OWN_ATOMIC_WRITE = re.compile(r"os\.replace\(|os\.rename\(|\.rename\(|\.replace\(target|mkstemp\(|mkdtemp\(")
ALLOWED = {"files.py"}   # the one place that renames


def test_no_writer_keeps_its_own_temp_and_rename():
    offenders = [f"{path.relative_to(SRC)}:{n}: {line.strip()}"
                 for path in SRC.rglob("*.py") if str(path.relative_to(SRC)) not in ALLOWED
                 for n, line in enumerate(path.read_text().splitlines(), 1) if OWN_ATOMIC_WRITE.search(line)]
    assert not offenders, "use transformerkit.files instead:\n" + "\n".join(offenders)
