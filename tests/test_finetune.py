"""Fine-tuning and pretraining pipelines end to end on tiny data: the rows, the heads, the
checkpoints (loaded back by transformers), the metrics file, and the errors a user can cause."""
from __future__ import annotations

import json
import random

import pytest
import torch
import transformers

import transformerkit as tk
from transformerkit.cli import main
from transformerkit.errors import ConfigError, DataError
from transformerkit.training import TrainConfig
from transformerkit.training.finetune import finetune, tagging_rows
from transformerkit.training.pretrain import pretrain_bert

WORDS = {"sport": "goal match team win score league cup player coach", "tech": "phone chip software data web app robot"}


def tiny_config(out, steps=12, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(max_steps=steps, batch_size=8, lr=1e-3, warmup_steps=2, eval_interval=steps,
                                 eval_batches=1, log_interval=4, save_interval=1000, out_dir=str(out)), **kw})


@pytest.fixture
def topic_csv(tmp_path):
    """A two-topic CSV a tiny model can learn in a few steps."""
    rng = random.Random(0)
    lines = ["text,label"]
    for i in range(120):
        label = "sport" if i % 2 else "tech"
        lines.append(" ".join(rng.choices(WORDS[label].split(), k=8)) + f",{label}")
    path = tmp_path / "topics.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def ner_file(tmp_path):
    rng = random.Random(1)
    sentences = []
    for _ in range(60):
        words = rng.choices("the a visited in near went saw".split(), k=4)
        city = rng.choice(["paris", "london", "new york"]).split()
        tags = ["O"] * 4 + ["B-loc"] + ["I-loc"] * (len(city) - 1)
        sentences.append("\n".join(f"{w}\t{t}" for w, t in zip(words + city, tags)))
    path = tmp_path / "cities.conll"
    path.write_text("\n\n".join(sentences) + "\n")
    return path


def test_sequence_classification_learns_writes_results_and_loads_in_transformers(topic_csv, tmp_path):
    out = tmp_path / "run"
    summary = finetune("bert-tiny", str(topic_csv), tiny_config(out, steps=40), max_length=16, scratch=True)
    assert summary["task"] == "sequence-classification" and summary["labels"] == ["sport", "tech"]
    assert summary["test"]["accuracy"] >= 0.9                      # the topics share no word
    assert json.loads((out / "results.json").read_text())["test"] == summary["test"]
    hf = transformers.BertForSequenceClassification.from_pretrained(out / "checkpoint").eval()
    assert hf.config.id2label == {0: "sport", 1: "tech"}
    ours = tk.load(out)
    enc = tk.load_tokenizer(out).batch_encode(["goal match team", "chip software data"])
    with torch.no_grad():
        assert torch.allclose(hf(**enc).logits, ours(**enc).logits, atol=1e-4)


def test_a_label_the_model_does_not_know_is_refused_unless_the_head_starts_fresh(topic_csv, tmp_path):
    finetune("bert-tiny", str(topic_csv), tiny_config(tmp_path / "a", steps=2), max_length=16, scratch=True)
    other = tmp_path / "other.csv"
    other.write_text("text,label\n" + "".join(f"goal win {i},weather\nchip data {i},tech\n" for i in range(20)))
    with pytest.raises(DataError, match=r"labels \['weather'\].*--fresh-head"):
        finetune(str(tmp_path / "a"), str(other), tiny_config(tmp_path / "b", steps=2), max_length=16)
    summary = finetune(str(tmp_path / "a"), str(other), tiny_config(tmp_path / "c", steps=2), max_length=16,
                       fresh_head=True)
    assert summary["labels"] == ["tech", "weather"]


def test_known_labels_keep_the_checkpoint_head_and_its_ids(topic_csv, tmp_path):
    finetune("bert-tiny", str(topic_csv), tiny_config(tmp_path / "a", steps=2), max_length=16, scratch=True)
    only_tech = tmp_path / "tech.csv"
    only_tech.write_text("text,label\n" + "".join(f"chip data {i},tech\n" for i in range(20)))
    summary = finetune(str(tmp_path / "a"), str(only_tech), tiny_config(tmp_path / "b", steps=2), max_length=16)
    assert summary["labels"] == ["sport", "tech"]                  # the head's own labels, tech still id 1


def test_ner_labels_only_the_first_piece_of_each_word(ner_file, tmp_path):
    tok = tk.load_tokenizer("bert-base-uncased")
    examples = [(["the", "unbelievably", "paris"], [0, 0, 1])]
    rows = tagging_rows(examples, tok, max_length=12, label_map=[0, 1, 2])
    ids, labels = rows[0, :12].tolist(), rows[0, 12:].tolist()
    pieces = tok.encode("unbelievably", add_special_tokens=False)
    assert len(pieces) > 1
    # [CLS] the un ##bel ... paris [SEP] pad: tags on "the", the first piece of "unbelievably" and "paris".
    assert labels[0] == -100 and labels[1] == 0 and labels[2] == 0
    assert labels[3:2 + len(pieces)] == [-100] * (len(pieces) - 1)
    assert labels[2 + len(pieces)] == 1 and ids[2 + len(pieces)] == tok.encode("paris", add_special_tokens=False)[0]
    summary = finetune("bert-tiny", str(ner_file), tiny_config(tmp_path / "ner", steps=30), max_length=16,
                       scratch=True)
    assert summary["task"] == "token-classification"
    assert summary["labels"] == ["O", "B-loc", "I-loc"]
    assert summary["test"]["examples"] == 6
    assert summary["loss"] < 0.6                                  # from ln 3 = 1.1: it learned
    # The entity F1 again, independently: transformers runs the checkpoint, the first piece of each
    # word gives its tag, and seqeval scores the test split directly.
    assert summary["test"]["entity_f1"] == pytest.approx(_reference_entity_f1(tmp_path / "ner", ner_file), abs=1e-12)


def _reference_entity_f1(run, data_file) -> float:
    from seqeval.metrics import f1_score

    from transformerkit.data.labelled import load_labelled

    data = load_labelled(str(data_file), seed=0)                  # the split finetune() used (split_seed 0)
    hf = transformers.BertForTokenClassification.from_pretrained(run / "checkpoint").eval()
    tok = tk.load_tokenizer(run)
    true, predicted = [], []
    for words, tags in data.splits["test"]:
        enc = tok.batch_encode([words], max_length=16, is_split_into_words=True, return_word_ids=True)
        word_ids = enc["word_ids"][0]
        with torch.no_grad():
            ids = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0].argmax(-1)
        first = [i for i, w in enumerate(word_ids) if w is not None and (i == 0 or word_ids[i - 1] != w)]
        assert len(first) == len(words)                           # every word fits in 16 pieces
        true.append([data.labels[t] for t in tags])
        predicted.append([hf.config.id2label[int(ids[i])] for i in first])
    return f1_score(true, predicted)


def test_max_length_beyond_the_model_is_refused(topic_csv, tmp_path):
    finetune("bert-tiny", str(topic_csv), tiny_config(tmp_path / "a", steps=1), max_length=16, scratch=True)
    with pytest.raises(ConfigError, match="max_length=999"):
        finetune(str(tmp_path / "a"), str(topic_csv), tiny_config(tmp_path / "b", steps=1), max_length=999)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny BERT pretrained briefly with MLM + NSP on a small text file."""
    rng = random.Random(2)
    text = "\n".join(" ".join(rng.choices("the king and queen of denmark walk to the castle at night".split(), k=9))
                     for _ in range(1500))
    corpus = tmp_path_factory.mktemp("corpus") / "court.txt"
    corpus.write_text(text)
    out = tmp_path_factory.mktemp("pretrain")
    summary = pretrain_bert("bert-tiny", str(corpus), tiny_config(out, steps=40, lr=3e-3, batch_size=16),
                            max_length=32)
    return out, summary


def test_pretraining_loss_falls_and_fill_mask_reads_the_checkpoint(pretrained):
    out, summary = pretrained
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0] - 2.0, losses                    # MLM + NSP from ln(30522) + ln 2 = 11
    model = tk.load(out)
    assert type(model).__name__ == "BertForPreTraining"
    predictions = tk.fill_mask(model, tk.load_tokenizer(out), "the king and [MASK] of denmark", top_k=3)
    assert len(predictions) == 1 and len(predictions[0]) == 3
    probs = [p for _, p in predictions[0]]
    assert probs == sorted(probs, reverse=True)
    # the same top 3 and probabilities from transformers' BertForPreTraining on the checkpoint
    tok = tk.load_tokenizer(out)
    enc = tok.batch_encode(["the king and [MASK] of denmark"])
    where = int((enc["input_ids"][0] == tok.mask_token_id).nonzero())
    hf = transformers.BertForPreTraining.from_pretrained(out / "checkpoint").eval()
    with torch.no_grad():
        ref = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).prediction_logits[0, where]
    top = ref.softmax(-1).topk(3)
    assert [t for t, _ in predictions[0]] == [tok.decode([i]).strip() for i in top.indices.tolist()]
    assert probs == pytest.approx(top.values.tolist(), abs=1e-5)
    assert {t for t, _ in predictions[0]} <= set("the king and queen of denmark walk to castle at night".split())


def test_fill_mask_errors(pretrained):
    out, _ = pretrained
    tok = tk.load_tokenizer(out)
    with pytest.raises(DataError, match=r"no \[MASK\]"):
        tk.fill_mask(tk.load(out), tok, "no mask here")
    with pytest.raises(ConfigError, match="no masked-LM head"):
        tk.fill_mask(tk.load(out, task="base"), tok, "the [MASK]")


def test_cli_fill_mask_embed_and_finetune_errors(pretrained, topic_csv, tmp_path, capsys):
    out, _ = pretrained
    assert main(["fill-mask", str(out), "the king and [MASK]", "--top-k", "2"]) == 0
    assert capsys.readouterr().out.startswith("[MASK] #1: ")
    assert main(["embed", "--model", str(out), "--similarity", "the king", "the queen"]) == 0
    sim = float(capsys.readouterr().out.split("\t")[0])
    # the cosine again from transformers' hidden states: mean over real tokens, then cosine
    hf = transformers.BertModel.from_pretrained(out / "checkpoint").eval()
    enc = tk.load_tokenizer(out).batch_encode(["the king", "the queen"])
    with torch.no_grad():
        states = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    weights = enc["attention_mask"][:, :, None].float()
    pooled = (states * weights).sum(1) / weights.sum(1)
    expected = torch.nn.functional.cosine_similarity(pooled[0], pooled[1], dim=0).item()
    assert sim == pytest.approx(expected, abs=6e-5)               # printed with 4 decimals
    assert main(["embed", "--model", str(out), "--similarity", "only one"]) == 1
    assert "even number" in capsys.readouterr().err
    assert main(["finetune", "--model", "bert-tiny", "--scratch", "--data", str(tmp_path / "missing.csv"),
                 "--out", str(tmp_path / "r")]) == 1
    assert "neither a known data set nor an existing file" in capsys.readouterr().err
