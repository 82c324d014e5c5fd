"""T5 and BART denoising pretraining end to end on a tiny corpus: the loss falls, the checkpoint fills
in masked spans, and the CLI runs it."""
import json
import random

import pytest

import transformerkit as tk
from transformerkit.cli import main
from transformerkit.errors import ConfigError, DataError
from transformerkit.inference import fill_in
from transformerkit.training import TrainConfig
from transformerkit.training.pretrain import pretrain_seq2seq

VERBS = ["sat on", "looked at", "ran to", "slept near"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    subjects, objects = ["the cat", "the dog", "a bird", "my friend"], ["the mat", "the door", "a tree"]
    lines = [f"{rng.choice(subjects)} {rng.choice(VERBS)} {rng.choice(objects)} ." for _ in range(2000)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(out, steps):
    return TrainConfig(max_steps=steps, batch_size=32, lr=2e-3, min_lr=2e-4, warmup_steps=20, eval_interval=steps,
                       eval_batches=2, log_interval=10, save_interval=10_000, out_dir=str(out))


def _first_loss(run) -> float:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss"]


def test_bart_learns_to_fill_in_a_masked_span(corpus, tmp_path):
    s = pretrain_seq2seq("bart", "bart-tiny", str(corpus), _config(tmp_path, 250), vocab_size=150, max_length=32)
    assert s["val_loss"] < _first_loss(tmp_path) - 3.0         # ~5.3 -> below 1 (copying what is not masked)
    model, tok = tk.load(tmp_path), tk.load_tokenizer(tmp_path)
    filled = fill_in(model, tok, "the cat <mask> the mat .")
    assert any(f"the cat {verb} the mat ." in filled for verb in VERBS), filled


def test_t5_span_corruption_trains_and_fills_sentinels(corpus, tmp_path, capsys):
    s = pretrain_seq2seq("t5", "t5-tiny", str(corpus), _config(tmp_path, 150), vocab_size=250, max_length=32)
    assert s["loss"] < _first_loss(tmp_path) - 2.0
    model, tok = tk.load(tmp_path), tk.load_tokenizer(tmp_path)
    assert tok.backend.token_to_id("<extra_id_99>") is not None
    filled = fill_in(model, tok, "the dog <extra_id_0> the door .")
    assert "<extra_id" not in filled and filled.startswith("the dog") and filled.endswith("the door .")
    capsys.readouterr()
    assert main(["fill-mask", str(tmp_path), "the dog sat on <extra_id_0> ."]) == 0
    assert capsys.readouterr().out.startswith("the dog sat on")


def test_bad_input(corpus, tmp_path):
    with pytest.raises(ConfigError, match="needs a t5 model"):
        pretrain_seq2seq("t5", "bart-tiny", str(corpus), _config(tmp_path, 1), vocab_size=150)
    with pytest.raises(ConfigError, match="pretrains t5 or bart"):
        pretrain_seq2seq("gpt", "gpt2-tiny", str(corpus), _config(tmp_path, 1))
    model = tk.build("t5-tiny")
    with pytest.raises(DataError, match="no <extra_id_0>"):
        fill_in(model, tk.load_tokenizer("gpt2-vocab"), "no sentinel here")
    with pytest.raises(ConfigError, match="not a denoising encoder-decoder"):
        fill_in(tk.build("transformer-tiny"), tk.load_tokenizer("gpt2-vocab"), "x <mask>")
