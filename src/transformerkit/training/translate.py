"""Translation: train an encoder-decoder on sentence pairs, translate, and score BLEU.

The recipe of Vaswani et al. 2017 (§5): one subword vocabulary shared by both languages,
Adam with betas (0.9, 0.98) and the inverse-square-root ("noam") schedule with warm-up, label
smoothing 0.1 (in the model's config), and beam search at test time; BLEU with sacrebleu on
detokenized text, the score papers report. Any encoder-decoder trains here -- the Transformer,
the seq2seq RNN with attention (Bahdanau et al. 2015), T5 (which reads a text-to-text task
prefix, Raffel et al. 2020 §2.4) and BART -- so they can be compared on the same data and budget.
What `tkit train` runs for an encoder-decoder; `tkit translate` calls `translate` / `bleu`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..config import ModelConfig
from ..errors import ConfigError, DataError, GenerationError
from ..files import atomic_write
from ..interop import load_pretrained
from ..interop.hf import checkpoint_config, resolve_checkpoint
from ..models import build, get_preset
from ..models.base import IGNORE_INDEX
from ..progress import bar, note
from ..tokenization import Tokenizer, load_tokenizer
from .trainer import TrainConfig, load_run_model, train

RESULTS_FILE = "results.json"
SETTINGS_FILE = "translation.json"   # in each checkpoint: languages, task prefix, max_length
ENCODER_DECODERS = ("transformer", "t5", "bart", "seq2seq_rnn")
TRANSLATE_DEFAULTS = TrainConfig(max_steps=4000, batch_size=64, lr=1e-3, min_lr=1e-4, warmup_steps=400,
                                 schedule="noam", betas=(0.9, 0.98), weight_decay=0.0, eval_interval=250,
                                 eval_batches=4, log_interval=25, save_interval=1000, out_dir="runs/translate")
LANGUAGES = {"en": "English", "es": "Spanish", "de": "German", "fr": "French"}


def task_prefix(config: ModelConfig, source_lang: str, target_lang: str) -> str:
    """T5 reads the task in its input (text-to-text, §2.4): "translate English to Spanish: ..."."""
    if config.family != "t5":
        return ""
    return (f"translate {LANGUAGES.get(source_lang, source_lang)} to "
            f"{LANGUAGES.get(target_lang, target_lang)}: ")


def encode_side(tok: Tokenizer, texts: list[str], max_length: int, what: str) -> tuple[list[list[int]], int]:
    """Token ids + </s> of each text, cut to max_length tokens; returns (rows, how many were cut)."""
    eos = tok.eos_token_id
    rows, cut = [], 0
    for i, ids in enumerate(tok.encode_batch(texts, add_special_tokens=False)):
        if not ids:
            raise DataError(f"{what} {i} is empty after tokenization ({texts[i]!r}); drop empty pairs first")
        if len(ids) + 1 > max_length:
            ids, cut = ids[:max_length - 1], cut + 1
        rows.append(ids + [eos])
    return rows, cut


def pair_rows(pairs: list[tuple[str, str]], tok: Tokenizer, max_length: int, prefix: str = ""
              ) -> tuple[torch.Tensor, int]:
    """(N, 2 * max_length) int32 rows: source ids + </s>, padded; then target ids + </s>, padded.
    Returns the rows and how many pairs had a side truncated to max_length tokens."""
    if not pairs:
        raise DataError("no sentence pairs to encode")
    sources, cut_s = encode_side(tok, [prefix + s for s, _ in pairs], max_length, "source")
    targets, cut_t = encode_side(tok, [t for _, t in pairs], max_length, "target")
    rows = torch.full((len(pairs), 2 * max_length), tok.pad_token_id, dtype=torch.int32)
    for i, (s, t) in enumerate(zip(sources, targets)):
        rows[i, :len(s)] = torch.tensor(s)
        rows[i, max_length:max_length + len(t)] = torch.tensor(t)
    return rows, cut_s + cut_t


def pair_lengths(rows: torch.Tensor, max_length: int, pad_id: int) -> torch.Tensor:
    """The longer side of each pair of `pair_rows`, in tokens: what its batch is padded to."""
    real = rows != pad_id
    return torch.maximum(real[:, :max_length].sum(1), real[:, max_length:].sum(1))


class PairBatches:
    """make_batch for the trainer: split rows into source and target, cut the padding columns no row
    of the batch uses, and turn target padding into ignored labels (the model shifts them right)."""

    def __init__(self, max_length: int, pad_id: int):
        self.max_length, self.pad_id = max_length, pad_id

    def __call__(self, rows: torch.Tensor) -> dict:
        src, tgt = rows[:, :self.max_length], rows[:, self.max_length:]
        mask = src != self.pad_id                                                  # (B, S)
        src_len, tgt_len = int(mask.sum(1).max()), int((tgt != self.pad_id).sum(1).max())
        labels = tgt[:, :tgt_len].masked_fill(tgt[:, :tgt_len] == self.pad_id, IGNORE_INDEX)
        return {"input_ids": src[:, :src_len], "attention_mask": mask[:, :src_len].long(), "labels": labels}


class LengthBuckets:
    """Batches of pairs of about the same length ("sentence pairs were batched together by approximate
    sequence length", Vaswani et al. §5.1), so a batch pads little: a pool of `pool` batches' worth of
    shuffled pairs is sorted by length and cut into batches, whose order is shuffled again. Epoch e's
    batches are a pure function of (seed, e), so a resumed run draws the same ones."""

    def __init__(self, lengths: torch.Tensor, batch_size: int, seed: int, pool: int = 50):
        if len(lengths) < batch_size:
            raise DataError(f"{len(lengths)} training pairs are fewer than one batch of {batch_size}; "
                            "lower the batch size or add data")
        self.lengths, self.batch_size, self.seed, self.pool = lengths, batch_size, seed, pool
        self.per_epoch = len(lengths) // batch_size
        self._epoch, self._batches = -1, None

    def __call__(self, step: int) -> torch.Tensor:                                # (batch_size,) row indices
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self._batches_of(epoch)
        return self._batches[i]

    def _batches_of(self, epoch: int) -> torch.Tensor:                           # (per_epoch, batch_size)
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.lengths), generator=g)[:self.per_epoch * self.batch_size]
        pools = order.split(self.pool * self.batch_size)
        order = torch.cat([p[self.lengths[p].argsort(stable=True)] for p in pools])
        batches = order.view(self.per_epoch, self.batch_size)
        return batches[torch.randperm(self.per_epoch, generator=g)]


def prepare_translation_model(model: str | ModelConfig, tok: Tokenizer, max_length: int, overrides: dict | None):
    """A fresh preset sized to the tokenizer, or a checkpoint (folder or run folder) to go on training."""
    if isinstance(model, str) and Path(model).exists():
        return load_pretrained(model, **(overrides or {})).train()
    config = get_preset(model) if isinstance(model, str) else model
    if config.family not in ENCODER_DECODERS:
        raise ConfigError(f"{model!r} is a {config.family} model; translation needs an encoder-decoder "
                          f"({', '.join(ENCODER_DECODERS)})")
    ids = {"vocab_size": tok.vocab_size, "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
           "bos_token_id": tok.bos_token_id, "decoder_start_token_id": tok.bos_token_id}
    if config.positions in ("learned", "sinusoidal"):
        ids["max_position"] = max(config.max_position, max_length + 1)
    return build(config.replace(**{**ids, **(overrides or {})}))


def train_translation(model: str | ModelConfig, data: str, config: TrainConfig = TRANSLATE_DEFAULTS, *,
                      tokenizer: str | None = None, vocab_size: int = 8000, max_length: int = 128,
                      overrides: dict | None = None, num_beams: int = 4, bleu_split: str = "test",
                      resume: bool = False) -> dict:
    """Train `model` (a preset such as 'transformer-small' or 'rnn-attention', or a checkpoint) to
    translate `data` ('bible-en-es' or a source<TAB>target file), then score BLEU on `bleu_split`.

    The joint tokenizer is trained on the training split (`vocab_size` tokens) unless `tokenizer`
    names one or `model` is a checkpoint (its own). Pairs longer than `max_length` tokens on a side are
    truncated (counted in the summary).
    Writes OUT/checkpoint and OUT/results.json; returns the trainer's summary plus `bleu`,
    `parameters`, `truncated` and a few sample translations.
    """
    from ..data.parallel import load_parallel, train_joint_tokenizer

    started = time.perf_counter()
    dataset = load_parallel(data)
    out_dir = Path(config.out_dir)
    if resume:
        tok = load_tokenizer(out_dir / "checkpoint")
    elif tokenizer is not None:
        tok = load_tokenizer(tokenizer)
    elif isinstance(model, str) and Path(model).exists():          # go on training a checkpoint: its vocabulary
        tok = load_tokenizer(resolve_checkpoint(model))
    else:
        tok = train_joint_tokenizer(dataset.splits["train"], vocab_size)
    if resume:
        net = load_run_model(out_dir, **(overrides or {}))
    else:
        torch.manual_seed(config.seed)          # the initial weights follow the run's seed
        net = prepare_translation_model(model, tok, max_length, overrides)
    if net.config.positions in ("learned", "sinusoidal") and max_length + 1 > net.config.max_position:
        raise ConfigError(f"max_length={max_length} does not fit the model's {net.config.max_position} positions "
                          f"(the decoder also reads its start token); use max_length <= {net.config.max_position - 1}")
    prefix = task_prefix(net.config, dataset.source_lang, dataset.target_lang)
    rows, truncated = {}, 0
    for split in ("train", "valid"):
        rows[split], cut = pair_rows(dataset.splits[split], tok, max_length, prefix)
        truncated += cut
    config = TrainConfig(**{**config.to_dict(), "block_size": 2 * max_length})
    settings = {"source_lang": dataset.source_lang, "target_lang": dataset.target_lang, "prefix": prefix,
                "max_length": max_length}
    summary = train(net, rows["train"], rows["valid"], config, resume=resume, tokenizer=tok,
                    make_batch=PairBatches(max_length, tok.pad_token_id),
                    sample_batch=LengthBuckets(pair_lengths(rows["train"], max_length, tok.pad_token_id),
                                               config.batch_size, config.seed),
                    extra_files={SETTINGS_FILE: json.dumps(settings, indent=2) + "\n"})
    test = dataset.splits[bleu_split]
    scored = bleu(net, tok, test, num_beams=num_beams, max_length=max_length, prefix=prefix)
    summary.update(data=dataset.name, parameters=net.num_parameters(), truncated=truncated,
                   bleu_split=bleu_split, num_beams=num_beams, bleu=scored["bleu"], bleu_signature=scored["signature"],
                   samples=[{"source": s, "reference": r, "translation": h}
                            for (s, r), h in list(zip(test, scored["translations"]))[:5]],
                   total_seconds=time.perf_counter() - started)
    atomic_write(out_dir / RESULTS_FILE, json.dumps(summary, indent=2, default=str))
    return summary


@torch.inference_mode()
def translate(model, tok: Tokenizer, sources: list[str], *, num_beams: int = 4, max_length: int = 128,
              max_new_tokens: int | None = None, batch_size: int = 32, prefix: str | None = None,
              truncate: bool = True, progress: bool = False, **generate_kwargs) -> list[str]:
    """Translate each source text. Sources are batched by length (little padding); a source longer
    than max_length tokens is cut there when `truncate`, else it is an error. The decoder writes
    at most max_new_tokens (default: 1.5 x the source + 10, within max_length) tokens."""
    from ..generation import generate

    if not model.is_encoder_decoder:
        raise ConfigError(f"{type(model).__name__} is not an encoder-decoder; translation needs one")
    if prefix is None:
        prefix = ""
    encoded = []
    for i, ids in enumerate(tok.encode_batch([prefix + s for s in sources], add_special_tokens=False)):
        if not sources[i].strip():
            raise GenerationError(f"source {i} is empty; give text to translate")
        if len(ids) + 1 > max_length:
            if not truncate:
                raise GenerationError(f"source {i} has {len(ids) + 1} tokens, more than max_length={max_length}; "
                                      "shorten it or allow truncation")
            ids = ids[:max_length - 1]
        encoded.append(ids + [tok.eos_token_id])
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    device = next(model.parameters()).device
    out: list[str | None] = [None] * len(encoded)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    shown = bar(batches, desc="translating", enabled=progress)
    every = max(1, len(batches) // 10)       # no live bar (a log file): a plain line per tenth instead
    for k, batch in enumerate(shown):
        if progress and shown.disable and k % every == 0 and k:
            note(f"translating: {k * batch_size}/{len(order)} sources")
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
        mask = (ids != tok.pad_token_id).long()
        limit = max_new_tokens if max_new_tokens is not None else min(max_length, int(1.5 * width) + 10)
        generated = generate(model, ids.to(device), mask.to(device), max_new_tokens=limit, num_beams=num_beams,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **generate_kwargs)
        for row, i in enumerate(batch):
            out[i] = tok.decode(generated[row, 1:].tolist(), skip_special_tokens=True).strip()
    return out


def bleu(model, tok: Tokenizer, pairs: list[tuple[str, str]], *, num_beams: int = 4, max_length: int = 128,
         prefix: str = "", progress: bool = True, **kwargs) -> dict:
    """Corpus BLEU (sacrebleu, its default 13a tokenization) of the model's translations of `pairs`."""
    import sacrebleu

    hypotheses = translate(model, tok, [s for s, _ in pairs], num_beams=num_beams, max_length=max_length,
                           prefix=prefix, progress=progress, **kwargs)
    metric = sacrebleu.BLEU()
    score = metric.corpus_score(hypotheses, [[t for _, t in pairs]])
    return {"bleu": score.score, "signature": str(metric.get_signature()), "translations": hypotheses}


def load_translator(path) -> tuple:
    """(model in eval mode, tokenizer, settings) of a checkpoint or run folder; settings holds the
    languages, T5's task prefix and max_length it was trained with (empty for a foreign checkpoint)."""
    folder = resolve_checkpoint(path)
    config, _ = checkpoint_config(folder)
    if config.family not in ENCODER_DECODERS:
        raise ConfigError(f"{path} holds a {config.family} model; translation needs an encoder-decoder "
                          f"({', '.join(ENCODER_DECODERS)})")
    settings_file = folder / SETTINGS_FILE
    settings = json.loads(settings_file.read_text()) if settings_file.exists() else {}
    return load_pretrained(folder), load_tokenizer(folder), settings


def model_family(model: str | ModelConfig) -> str:
    """The family of a preset name, a ModelConfig, or a checkpoint / run folder."""
    if isinstance(model, ModelConfig):
        return model.family
    if Path(model).exists():
        return checkpoint_config(model)[0].family
    return get_preset(model).family
