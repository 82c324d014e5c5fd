"""Fine-tuning an encoder on labelled data (Devlin et al. 2019, §4): a checkpoint (or a fresh
preset) gets a classification head, the trainer runs, and the test split is scored.

Sequence classification scores accuracy and macro-F1; token classification (NER) labels each
word's first sub-word piece (the others are ignored, -100) and scores entity-level F1 with
seqeval. What `tkit finetune` runs; a library user calls `finetune` the same way.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..assets import CATALOG, fetch
from ..data.labelled import ClassificationData, TaggingData, load_labelled
from ..errors import ConfigError, DataError
from ..files import atomic_write
from ..interop import load_pretrained
from ..interop.hf import checkpoint_config, resolve_checkpoint
from ..metrics import accuracy, entity_f1, macro_f1
from ..models import build, get_preset
from ..models.base import IGNORE_INDEX
from ..tokenization import load_tokenizer
from .trainer import TrainConfig, train

RESULTS_FILE = "results.json"
# Fine-tuning settings in the range of the paper's (§A.3: lr 2e-5..5e-5, batch 16/32, a few epochs),
# AdamW with betas (0.9, 0.999), weight decay 0.01, 10% warm-up, decay to zero.
FINETUNE_DEFAULTS = TrainConfig(max_steps=300, batch_size=16, lr=5e-5, min_lr=0.0, warmup_steps=30,
                                weight_decay=0.01, betas=(0.9, 0.999), eval_interval=100, eval_batches=8,
                                log_interval=10, save_interval=100000, out_dir="runs/finetune")


def resolve_source(model: str, scratch: bool = False) -> Path | None:
    """The checkpoint folder `model` names (a folder, a run folder, or a catalog asset with weights
    such as minilm-l6), or None when it is a preset to build fresh (always with `scratch`)."""
    if scratch:
        return None
    if Path(model).exists() or (model in CATALOG and (fetch(model) / "config.json").exists()):
        return resolve_checkpoint(model)
    return None


def prepare_model(model: str, task: str, labels: list[str], tokenizer: str | None, max_length: int,
                  scratch: bool = False, fresh_head: bool = False, overrides: dict | None = None):
    """(model, tokenizer, label_map): label_map[i] is the model's id of the data's label i.

    A checkpoint of another task (a bare encoder, a masked LM) gets a fresh head sized to the
    data's labels. A checkpoint already fine-tuned for this task keeps its head, and every label of
    the data must be one it knows -- unless fresh_head starts a new head for the data's labels.
    """
    source = resolve_source(model, scratch)
    if source is None:
        tok = load_tokenizer(tokenizer or "bert-base-uncased")
        config = get_preset(model)   # a clear error for an unknown name
        config = config.replace(vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id,
                                max_position=max(config.max_position, max_length), num_labels=len(labels),
                                label_names=list(labels), **(overrides or {}))
        return build(config, task=task), tok, list(range(len(labels)))
    tok = load_tokenizer(tokenizer or source)
    config, saved_task = checkpoint_config(source)
    keeps_head = saved_task == task and not fresh_head
    if keeps_head:
        known = config.label_names or [f"LABEL_{i}" for i in range(config.num_labels)]
        unknown = [label for label in labels if label not in known]
        if unknown:
            raise DataError(f"the data has labels {unknown} that the model {source} does not know (its labels: "
                            f"{known}); fine-tune with fresh_head=True (tkit: --fresh-head) to start a new head "
                            "for the data's labels")
        net = load_pretrained(source, **(overrides or {}))
        label_map = [known.index(label) for label in labels]
    else:
        net = load_pretrained(source, task=task, fresh_head=True, num_labels=len(labels),
                              label_names=list(labels), **(overrides or {}))
        label_map = list(range(len(labels)))
    if max_length > net.config.max_position:
        raise ConfigError(f"max_length={max_length} exceeds the model's {net.config.max_position} positions; "
                          f"use max_length <= {net.config.max_position}")
    return net.train(), tok, label_map


# ------------------------------------------------------------------------------------- data as rows

def classification_rows(examples, tok, max_length: int, label_map: list[int]) -> torch.Tensor:
    """(N, max_length + 1) int32 rows: [CLS] text [SEP] padded, then the label id."""
    enc = tok.batch_encode([text for text, _ in examples], max_length=max_length, padding="max_length")
    labels = torch.tensor([label_map[label] for _, label in examples])[:, None]
    return torch.cat([enc["input_ids"], labels], dim=1).to(torch.int32)


def tagging_rows(examples, tok, max_length: int, label_map: list[int]) -> torch.Tensor:
    """(N, 2 * max_length) int32 rows: sub-word ids, then one label per sub-word -- the word's tag
    on its first piece, -100 on the other pieces, the special tokens and padding (§4.3)."""
    enc = tok.batch_encode([words for words, _ in examples], max_length=max_length, padding="max_length",
                           is_split_into_words=True, return_word_ids=True)
    labels = torch.full_like(enc["input_ids"], IGNORE_INDEX)
    for row, ((_, tags), word_ids) in enumerate(zip(examples, enc["word_ids"])):
        previous = None
        for col, word in enumerate(word_ids):
            if word is not None and word != previous:
                labels[row, col] = label_map[tags[word]]
            previous = word
    return torch.cat([enc["input_ids"], labels], dim=1).to(torch.int32)


class Batches:
    """make_batch for the trainer: split rows into inputs and labels and cut the padding columns
    that no row of the batch uses (a batch of short tweets runs at its own length, not max_length)."""

    def __init__(self, max_length: int, pad_id: int, tagging: bool):
        self.max_length, self.pad_id, self.tagging = max_length, pad_id, tagging

    def __call__(self, rows: torch.Tensor) -> dict:
        ids = rows[:, : self.max_length]
        mask = ids != self.pad_id                                                   # (B, L)
        length = int(mask.sum(1).max())
        labels = rows[:, self.max_length: self.max_length + length] if self.tagging else rows[:, -1]
        return {"input_ids": ids[:, :length], "attention_mask": mask[:, :length].long(), "labels": labels}


@torch.no_grad()
def predict(model, rows: torch.Tensor, batches: Batches, batch_size: int = 64) -> list:
    """Predicted label ids: one per row (classification) or one list per row over its labelled
    positions (tagging: the first piece of every word that fits)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for chunk in rows.long().split(batch_size):
        batch = {k: v.to(device) for k, v in batches(chunk).items()}
        labels = batch.pop("labels")
        pred = model(**batch).logits.argmax(-1)
        if batches.tagging:
            out.extend(p[l != IGNORE_INDEX].tolist() for p, l in zip(pred, labels))
        else:
            out.extend(pred.tolist())
    return out


def score(model, rows: torch.Tensor, batches: Batches, label_names: list[str]) -> dict:
    """Accuracy and macro-F1 (classification) or entity-level P/R/F1 (tagging) on `rows`."""
    predictions = predict(model, rows, batches)
    if batches.tagging:
        labels = rows[:, batches.max_length:].long()
        truth = [l[l != IGNORE_INDEX].tolist() for l in labels]
        result = entity_f1(truth, predictions, labels=label_names)
        return {"entity_f1": result["f1"], "precision": result["precision"], "recall": result["recall"],
                "examples": len(rows)}
    truth = rows[:, -1].tolist()
    return {"accuracy": accuracy(predictions, truth), "macro_f1": macro_f1(predictions, truth, len(label_names)),
            "examples": len(rows)}


# --------------------------------------------------------------------------------------- the pipeline

def finetune(model: str, data: str, config: TrainConfig, *, tokenizer: str | None = None, max_length: int = 128,
             scratch: bool = False, fresh_head: bool = False, split_seed: int = 0,
             overrides: dict | None = None) -> dict:
    """Fine-tune `model` (checkpoint folder, asset such as 'minilm-l6', or a preset with scratch/no
    weights) on `data` ('bbc-news', 'tweets-sentiment', 'wnut-ner' or a file `load_labelled` reads).

    Validation loss is logged during training; at the end the valid and test splits are scored
    and the metrics written to OUT/results.json next to the checkpoint (which transformers loads).
    Returns the trainer's summary plus `valid`, `test`, `parameters`, `task` and `labels`.
    """
    dataset = load_labelled(data, seed=split_seed)
    tagging = isinstance(dataset, TaggingData)
    if not isinstance(dataset, (ClassificationData, TaggingData)):
        raise DataError(f"{data!r} is not labelled data that fine-tuning knows")
    task = "token-classification" if tagging else "sequence-classification"
    started = time.perf_counter()
    torch.manual_seed(config.seed)              # a fresh head (or model) starts from the run's seed
    net, tok, label_map = prepare_model(model, task, dataset.labels, tokenizer, max_length, scratch, fresh_head,
                                        overrides)
    if tok.pad_token_id is None:
        raise ConfigError(f"the tokenizer {tok!r} has no pad token; fine-tuning pads batches, use a BERT vocabulary")
    make_rows = tagging_rows if tagging else classification_rows
    rows = {split: make_rows(examples, tok, max_length, label_map) for split, examples in dataset.splits.items()}
    batches = Batches(max_length, tok.pad_token_id, tagging)
    config = TrainConfig(**{**config.to_dict(), "block_size": max_length})
    summary = train(net, rows["train"], rows["valid"], config, tokenizer=tok, make_batch=batches)
    label_names = net.config.label_names or dataset.labels
    summary.update(task=task, labels=label_names, parameters=net.num_parameters(), data=dataset.name,
                   valid=score(net, rows["valid"], batches, label_names),
                   test=score(net, rows["test"], batches, label_names),
                   total_seconds=time.perf_counter() - started)
    atomic_write(Path(config.out_dir) / RESULTS_FILE, json.dumps(summary, indent=2, default=str))
    return summary
