"""Translation end to end on a toy language pair: train, translate, BLEU, the CLI, and bad input."""
import json
import random

import pytest
import torch

import transformerkit as tk
from transformerkit.cli import main
from transformerkit.errors import ConfigError, DataError, GenerationError
from transformerkit.training import TrainConfig
from transformerkit.training.translate import PairBatches, bleu, pair_rows, train_translation, translate

WORDS = {"one": "uno", "two": "dos", "three": "tres", "four": "cuatro", "five": "cinco", "six": "seis",
         "seven": "siete", "eight": "ocho", "nine": "nueve", "red": "rojo", "green": "verde", "house": "casa",
         "dog": "perro", "cat": "gato", "water": "agua", "bread": "pan"}


@pytest.fixture(scope="module")
def toy_pairs(tmp_path_factory):
    """A word-for-word 'English -> Spanish' file: easy enough to learn in seconds on one thread."""
    rng = random.Random(0)
    english = list(WORDS)
    lines = set()
    while len(lines) < 600:
        words = [rng.choice(english) for _ in range(rng.randint(2, 6))]
        lines.add(" ".join(words) + "\t" + " ".join(WORDS[w] for w in words))
    path = tmp_path_factory.mktemp("toy") / "pairs.tsv"
    path.write_text("\n".join(sorted(lines)) + "\n", encoding="utf-8")
    return path


def _config(tmp_path, **kw):
    settings = dict(max_steps=400, batch_size=32, lr=3e-3, min_lr=3e-4, warmup_steps=30, schedule="cosine",
                    betas=(0.9, 0.98), weight_decay=0.0, eval_interval=200, eval_batches=2, log_interval=25,
                    save_interval=1000, out_dir=str(tmp_path / "run"))
    return TrainConfig(**{**settings, **kw})


@pytest.fixture(scope="module")
def trained(toy_pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("translate")
    summary = train_translation("transformer-tiny", str(toy_pairs), _config(out), vocab_size=120, max_length=16,
                                overrides={"dropout": 0.0}, num_beams=2)
    return summary, out / "run"


def test_a_transformer_learns_the_toy_pair(trained):
    summary, run = trained
    assert summary["val_loss"] < 1.2        # from ~ln(120) = 4.8; label smoothing 0.1 keeps it above ~0.8
    assert summary["bleu"] > 80, summary["samples"]
    results = json.loads((run / "results.json").read_text())
    assert results["bleu"] == summary["bleu"] and results["parameters"] > 0
    settings = json.loads((run / "checkpoint" / "translation.json").read_text())
    assert settings["max_length"] == 16 and settings["prefix"] == ""


def test_translate_and_bleu_functions(trained, toy_pairs):
    _, run = trained
    model, tok = tk.load(run), tk.load_tokenizer(run)
    out = translate(model, tok, ["one two three", "red dog"], num_beams=1)
    assert out == ["uno dos tres", "rojo perro"]
    pair = ("one two three red dog", "uno dos tres rojo perro")      # BLEU needs 4-grams: 5 words
    scored = bleu(model, tok, [pair], num_beams=2, progress=False)
    assert scored["bleu"] == pytest.approx(100.0) and scored["translations"] == [pair[1]]
    with pytest.raises(GenerationError, match="source 1 is empty"):
        translate(model, tok, ["one", "  "])
    with pytest.raises(GenerationError, match="more than max_length=4"):
        translate(model, tok, ["one two three four five six"], max_length=4, truncate=False)
    assert len(translate(model, tok, ["one two three four five six"], max_length=4)) == 1   # truncated


def test_cli_translate(trained, capsys):
    _, run = trained
    assert main(["translate", str(run), "five cat", "--beams", "1"]) == 0
    assert capsys.readouterr().out.strip() == "cinco gato"
    assert main(["translate", str(run)]) == 1
    assert "nothing to translate" in capsys.readouterr().err


def test_rows_truncate_and_batches_cut_padding():
    rows, cut = pair_rows([("a b c d e f g h", "x"), ("a", "y z")], _PadTok(), max_length=4)
    assert rows.shape == (2, 8) and cut == 1
    assert rows[0, :4].tolist() == [10, 11, 12, 2]             # cut to 3 tokens + </s>
    batch = PairBatches(4, 0)(rows.long())
    assert batch["input_ids"].shape == (2, 4) and batch["labels"].tolist() == [[20, 2, -100], [21, 22, 2]]
    with pytest.raises(DataError, match="source 0 is empty"):
        pair_rows([("", "x")], _PadTok(), max_length=4)


class _PadTok:
    """Letters a.. as ids 10.., x.. as 20..; pad 0, eos 2."""
    pad_token_id, eos_token_id = 0, 2

    def encode_batch(self, texts, add_special_tokens=False):
        return [[(10 if w < "x" else 20) + ord(w) - (ord("a") if w < "x" else ord("x")) for w in t.split()]
                for t in texts]


def test_max_length_beyond_the_checkpoint_positions_is_refused(trained, toy_pairs, tmp_path):
    _, run = trained
    with pytest.raises(ConfigError, match="max_length=200 does not fit the model's 128 positions"):
        train_translation(str(run / "checkpoint"), str(toy_pairs), _config(tmp_path), max_length=200)


def test_a_gpt_is_not_a_translator(tmp_path, toy_pairs, capsys):
    with pytest.raises(ConfigError, match="needs an encoder-decoder"):
        train_translation("gpt2-tiny", str(toy_pairs), _config(tmp_path))
    # a decoder-only checkpoint is neither loaded as an encoder-decoder nor used to translate
    tk.build("gpt2-tiny").save_pretrained(tmp_path / "gpt")
    with pytest.raises(ConfigError, match="no 'seq2seq' model for family 'gpt'"):
        tk.load(tmp_path / "gpt", task="seq2seq")
    assert main(["translate", str(tmp_path / "gpt"), "hello"]) == 1
    assert "translation needs an encoder-decoder" in capsys.readouterr().err


def test_cross_attention_plot(trained, tmp_path):
    from transformerkit.viz import cross_attention, plot_alignment

    _, run = trained
    model, tok = tk.load(run), tk.load_tokenizer(run)
    weights, src, tgt = cross_attention(model, tok, "red dog water", "rojo perro agua")
    assert weights.shape == (len(tgt), len(src)) and src[-1] == tgt[-1] == "</s>"
    assert torch.allclose(weights.sum(-1), torch.ones(len(tgt)), atol=1e-5)
    # a word-for-word pair: each target word attends most to its own source word (the alignment)
    assert weights[:3, :3].argmax(-1).tolist() == [0, 1, 2]
    files = plot_alignment(weights, src, tgt, tmp_path / "align.png", title="toy")
    assert [f.suffix for f in files] == [".png", ".svg"] and all(f.stat().st_size > 1000 for f in files)


def test_length_buckets_cover_each_epoch_with_similar_lengths():
    from transformerkit.training.translate import LengthBuckets

    lengths = torch.randint(1, 100, (1000,), generator=torch.Generator().manual_seed(0))
    sampler = LengthBuckets(lengths, batch_size=10, seed=3, pool=10)
    epoch = torch.stack([sampler(step) for step in range(100)])                  # 100 batches of 10
    assert epoch.unique().numel() == 1000                                       # every pair once
    spread = (lengths[epoch].max(1).values - lengths[epoch].min(1).values).float().mean()
    random_spread = (lengths.view(100, 10).max(1).values - lengths.view(100, 10).min(1).values).float().mean()
    assert spread < random_spread / 4                                           # little padding
    assert torch.equal(LengthBuckets(lengths, 10, seed=3, pool=10)(57), sampler(57))   # a pure function
    assert not torch.equal(sampler(100 + 5), sampler(5))                        # a new order each epoch
    with pytest.raises(DataError, match="fewer than one batch"):
        LengthBuckets(lengths[:5], batch_size=10, seed=0)
