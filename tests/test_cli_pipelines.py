"""Every `tkit` command's --help, and the training pipelines driven through the CLI on tiny data:
pretraining (BERT with and without NSP, whole-word masking; T5; BART), exact resume through each
pipeline, and an encoder-decoder trained with `tkit train` then scored with `tkit translate`."""
from __future__ import annotations

import argparse
import json
import math
import random
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import transformerkit as tk
import transformerkit.training.pretrain as pretrain_module
from transformerkit.analysis import hardware
from transformerkit.cli import build_parser, main
from transformerkit.tokenization import train_wordpiece

WORDS = ("the king and queen of denmark walk to the castle at night while soldiers watch over "
         "unbelievably quiet courtyards").split()


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the parser: (), ("train",), ("data", "fetch"), ... (found, not listed)."""
    found = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, path + (name,))
    return found


COMMANDS = _commands(build_parser())


def test_the_command_tree_is_found():
    names = {c[0] for c in COMMANDS if c}
    assert {"train", "translate", "finetune", "pretrain", "generate", "fill-mask", "embed", "convert", "info", "data",
            "analyze", "viz"} <= names
    assert {("data", "list"), ("data", "fetch"), ("data", "show"), ("viz", "attention"), ("viz", "positions"),
            ("viz", "curves")} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "tkit")
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(" ".join(("usage: tkit", *command)) + " "), out[:200]
    assert "-h, --help" in out


# --------------------------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """Short lines of a small vocabulary; under an 80-token WordPiece most words are several pieces."""
    rng = random.Random(0)
    lines = [" ".join(rng.choices(WORDS, k=rng.randint(6, 12))) + " ." for _ in range(600)]
    path = tmp_path_factory.mktemp("corpus") / "court.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _train_options(out, steps, **changes) -> list[str]:
    """Small, fast trainer settings as CLI options."""
    options = {"--out": out, "--max-steps": steps, "--batch-size": 8, "--lr": 3e-3, "--warmup-steps": 2,
               "--log-interval": 2, "--eval-interval": steps, "--eval-batches": 1, "--save-interval": 1000,
               "--device": "cpu", **changes}
    return [str(x) for item in options.items() for x in item]


def _metrics(run) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def _check_metrics(run, steps: int) -> list[float]:
    """The run's metrics log: a training row every 2 steps with finite values, a validation row at the end."""
    rows = _metrics(run)
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(2, steps + 1, 2))
    assert all({"step", "loss", "lr", "tokens_per_s", "elapsed"} <= set(r) for r in train_rows)
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 and r["tokens_per_s"] > 0 for r in train_rows)
    val = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in val] == [steps] and math.isfinite(val[0]["val_loss"])
    return [r["loss"] for r in train_rows]


def _weights(run) -> dict:
    return load_file(Path(run) / "checkpoint" / "model.safetensors")


def _config(run) -> dict:
    return json.loads((Path(run) / "checkpoint" / "config.json").read_text())


# --------------------------------------------------------------------------------------------- pretrain

@pytest.fixture
def batcher_spy(monkeypatch):
    """The keyword arguments of each MaskedLMBatches that pretrain_bert builds (then built for real)."""
    calls = []
    real = pretrain_module.MaskedLMBatches

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(pretrain_module, "MaskedLMBatches", spy)
    return calls


@pytest.mark.parametrize("flags", [[], ["--no-nsp", "--whole-word"]], ids=["mlm+nsp", "mlm-whole-word"])
def test_pretrain_bert(flags, text_file, tmp_path, batcher_spy, capsys):
    run = tmp_path / "bert"
    argv = ["pretrain", "bert", "--data", str(text_file), "--tokenizer", "train:80", "--max-length", "32",
            "--set", "n_layer=1", *flags, *_train_options(run, 8, **{"--lr": 1e-2})]
    assert main(argv) == 0
    out = capsys.readouterr().out
    nsp = "--no-nsp" not in flags
    assert ("(MLM + NSP)" if nsp else "(MLM)") in out and f"checkpoint: {run / 'checkpoint'}" in out
    losses = _check_metrics(run, 8)
    assert losses[-1] < losses[0]                                 # from about ln(vocab) (+ ln 2) it falls
    # the flags reach the objective: NSP pairs or plain segments, whole words or single pieces
    assert len(batcher_spy) == 2                                  # training batches, fixed validation masks
    assert all(c["nsp"] is nsp for c in batcher_spy)
    assert all((c["word_starts"] is not None) is ("--whole-word" in flags) for c in batcher_spy)
    # the saved model: BertForPreTraining with its NSP head, or BertForMaskedLM without one
    assert _config(run)["architectures"] == ["BertForPreTraining" if nsp else "BertForMaskedLM"]
    assert any(k.startswith("cls.seq_relationship") for k in _weights(run)) is nsp
    assert _config(run)["num_hidden_layers"] == 1                 # --set reached the model


def test_whole_word_masking_masks_every_piece_of_a_word(text_file, tmp_path, batcher_spy):
    """The word-start table that --whole-word builds from the vocabulary trained on the corpus: a word
    (as the tokenizer's word ids say, independently of the table) is masked with all its pieces or not at all."""
    run = tmp_path / "bert"
    assert main(["pretrain", "bert", "--data", str(text_file), "--tokenizer", "train:80", "--max-length", "32",
                 "--no-nsp", "--whole-word", *_train_options(run, 2)]) == 0
    tok = tk.load_tokenizer(run)
    words = "unbelievably quiet courtyards at night".split()
    enc = tok.batch_encode([words] * 64, max_length=32, is_split_into_words=True, return_word_ids=True,
                           padding="max_length")
    word_ids = enc["word_ids"][0]
    assert sum(w is not None for w in word_ids) > 2 * len(words)  # most words are several pieces, none cut off
    assert max(w for w in word_ids if w is not None) == len(words) - 1
    batches = pretrain_module.MaskedLMBatches(**{**batcher_spy[0], "seed": 0})
    masked = batches(enc["input_ids"].to(torch.int32))["labels"] != -100      # (64, 32)
    assert masked.shape == enc["input_ids"].shape and masked.any()
    for row in masked.tolist():
        for w in range(len(words)):
            pieces = {row[i] for i, word in enumerate(word_ids) if word == w}
            assert len(pieces) == 1, (words[w], row)              # all pieces masked, or none


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_pretrain_seq2seq(family, text_file, tmp_path, capsys):
    run = tmp_path / family
    assert main(["pretrain", family, "--data", str(text_file), "--vocab-size", "150", "--max-length", "32",
                 *_train_options(run, 6)]) == 0
    out = capsys.readouterr().out
    objective = "span corruption" if family == "t5" else "text infilling + sentence permutation"
    assert f"({objective})" in out and f"checkpoint: {run / 'checkpoint'}" in out
    _check_metrics(run, 6)
    config = _config(run)
    assert config["model_type"] == family
    tokens = json.loads((run / "checkpoint" / "tokenizer.json").read_text())["added_tokens"]
    special = {t["content"] for t in tokens}
    assert ({"<extra_id_0>", "<extra_id_99>"} if family == "t5" else {"<mask>"}) <= special


# --------------------------------------------------------------------------------------------- resume

def _resumed_equals_straight(tmp_path, command: list[str], n: int, fresh_process: bool = False, **changes) -> dict:
    """`command` stopped after n steps and resumed (--resume) to 2n ends where one run of 2n steps ends:
    the same weights, bit for bit, and the same logged losses, learning rates and validation losses.

    The noam schedule depends on the step only. The default cosine schedule decays to --max-steps, so a
    run first told to stop at n takes other learning rates than one told 2n unless --decay-steps pins
    the decay (test_resume_with_cosine_decay_pinned)."""
    changes = {"--schedule": "noam", "--eval-interval": n, "--log-interval": 2, **changes}
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    torch.manual_seed(0)                                          # --seed, not the process's RNG, decides
    assert main(command + _train_options(straight, 2 * n, **changes)) == 0
    torch.manual_seed(1)
    assert main(command + _train_options(stopped, n, **changes)) == 0
    at_n = _weights(stopped)
    torch.manual_seed(12345)                                      # resuming must not depend on the process's RNG
    if fresh_process:
        hardware._measured_peak.cache_clear()                     # as in a new `tkit train --resume` process
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(command + ["--resume"] + _train_options(stopped, 2 * n, **changes)) == 0
    assert not [w for w in caught if "resuming with changed" in str(w.message)]
    a, b = _weights(straight), _weights(stopped)
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert not all(torch.equal(b[k], at_n[k]) for k in b)       # the resumed half did train
    keep = ("step", "loss", "lr", "val_loss")
    rows = [[{k: r[k] for k in keep if k in r} for r in _metrics(run)] for run in (straight, stopped)]
    assert rows[0] == rows[1]
    assert [r["step"] for r in rows[0] if "val_loss" in r] == [n, 2 * n]
    assert [r["step"] for r in rows[0] if "loss" in r] == list(range(2, 2 * n + 1, 2))
    return rows[0]


def _lm_command(text_file) -> list[str]:
    return ["train", "--model", "gpt2-tiny", "--data", str(text_file), "--tokenizer", "char", "--set", "n_layer=1",
            "d_model=32", "n_head=2", "d_ff=64", "--block-size", "16", "--sample-tokens", "1"]


def test_resume_language_model(text_file, tmp_path, capsys):
    """GPT with dropout on characters: the dropout RNG, data order and AdamW moments carry over."""
    _resumed_equals_straight(tmp_path, _lm_command(text_file), 4)
    assert "sample:" in capsys.readouterr().out


def test_resume_with_cosine_decay_pinned(text_file, tmp_path, capsys):
    """The default cosine schedule resumes exactly when --decay-steps fixes where it ends."""
    rows = _resumed_equals_straight(tmp_path, _lm_command(text_file), 4,
                                    **{"--schedule": "cosine", "--decay-steps": 8, "--warmup-steps": 2})
    assert len({r["lr"] for r in rows if "lr" in r}) > 2                       # the rate did decay
    capsys.readouterr()


def test_resume_in_a_new_process_is_exact(text_file, tmp_path, capsys):
    """The peak FLOP/s measurement a new process makes (for MFU) must not move the restored RNG."""
    _resumed_equals_straight(tmp_path, _lm_command(text_file), 4, fresh_process=True)


def test_the_same_seed_gives_the_same_run(text_file, tmp_path, capsys):
    """--seed seeds the initial weights too, not only the training that follows."""
    for name, state in (("a", 1), ("b", 2)):                      # two processes start from different RNG states
        torch.manual_seed(state)
        assert main(_lm_command(text_file) + _train_options(tmp_path / name, 2, **{"--seed": 7})) == 0
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def wordpiece(text_file, tmp_path_factory):
    """One WordPiece vocabulary for runs that must match: training one (train:N) twice can number the
    tokens differently (the tokenizers library breaks ties between equally frequent pieces at random)."""
    folder = tmp_path_factory.mktemp("wordpiece")
    train_wordpiece([text_file.read_text()], 80).save(folder)
    return folder


@pytest.mark.parametrize("family", ["bert", "t5", "bart"])   # T5's config.json has no bos_token_id: resume keeps it
def test_resume_pretraining(family, text_file, wordpiece, tmp_path, capsys):
    """Masks (BERT), spans (T5) and noise (BART) are drawn from the RNG the checkpoint restores."""
    vocabulary = ["--tokenizer", str(wordpiece)] if family == "bert" else ["--vocab-size", "150"]
    _resumed_equals_straight(tmp_path, ["pretrain", family, "--data", str(text_file), *vocabulary,
                                        "--max-length", "32", "--set", "n_layer=1"], 4)
    capsys.readouterr()


# --------------------------------------------------------------------------------------------- translation

@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """A word-for-word toy pair, source<TAB>target (the format `tkit train --data FILE` reads)."""
    words = {"one": "uno", "two": "dos", "three": "tres", "red": "rojo", "green": "verde", "house": "casa",
             "dog": "perro", "cat": "gato"}
    rng = random.Random(1)
    lines = set()
    while len(lines) < 200:
        chosen = [rng.choice(list(words)) for _ in range(rng.randint(2, 5))]
        lines.add(" ".join(chosen) + "\t" + " ".join(words[w] for w in chosen))
    path = tmp_path_factory.mktemp("pairs") / "pairs.tsv"
    path.write_text("\n".join(sorted(lines)) + "\n", encoding="utf-8")
    return path


TRANSLATION = ["--model", "transformer-tiny", "--vocab-size", "60", "--max-length", "12", "--beams", "2",
               "--set", "n_layer=1", "n_decoder_layer=1"]


def test_train_an_encoder_decoder_then_translate_scores_the_same_bleu(pairs_file, tmp_path, capsys):
    run = tmp_path / "mt"
    assert main(["train", "--data", str(pairs_file), *TRANSLATION,
                 *_train_options(run, 6, **{"--schedule": "noam", "--eval-interval": 6})]) == 0
    out = capsys.readouterr().out
    results = json.loads((run / "results.json").read_text())
    assert f"BLEU on test (2 beams): {results['bleu']:.2f}" in out
    assert f"parameters: {results['parameters']:,}" in out and "-> " in out      # sample translations
    _check_metrics(run, 6)
    assert _config(run)["model_type"] == "marian"
    settings = json.loads((run / "checkpoint" / "translation.json").read_text())
    assert settings["max_length"] == 12
    # tkit translate scores the same test split with the same beams: the same BLEU
    assert main(["translate", str(run), "--data", str(pairs_file), "--split", "test", "--beams", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"BLEU on {pairs_file} test (") and f"2 beams): {results['bleu']:.2f}" in line, line
    assert main(["translate", str(run), "one dog", "two cat", "--beams", "1"]) == 0
    assert capsys.readouterr().out.count("\n") == 2                                  # one line per text


def test_resume_translation(pairs_file, tmp_path, capsys):
    """Length-bucketed batches are a function of the step too; the BLEU at the end then agrees as well.
    The Marian config.json has no label smoothing: resume takes the run's own config (0.1) from its state."""
    _resumed_equals_straight(tmp_path, ["train", "--data", str(pairs_file), *TRANSLATION], 4)
    capsys.readouterr()
    bleus = [json.loads((tmp_path / run / "results.json").read_text())["bleu"] for run in ("straight", "stopped")]
    assert bleus[0] == bleus[1]
