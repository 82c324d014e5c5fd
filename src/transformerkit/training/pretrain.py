"""Pretraining with each family's own objective; the one trainer runs them all.

BERT (Devlin et al. 2019, §3.1, Appendix A): a text corpus becomes documents of sentences, pairs
for next sentence prediction, and masked batches. T5 and BART (below): the corpus becomes rows
that a denoising collator corrupts per batch (objectives/span_corruption.py, denoising.py).
What `tkit pretrain bert|t5|bart` runs; a library user calls `pretrain_bert` / `pretrain_seq2seq`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import ModelConfig
from ..data.text import encode_corpus, load_corpus, pack_blocks
from ..errors import ConfigError
from ..interop import load_pretrained
from ..models import build, get_preset
from ..objectives import (
    DenoisingBatches,
    DenoisingTokens,
    MaskedLMBatches,
    SentinelIds,
    SpanCorruptionBatches,
    build_pretraining_pairs,
    pack_pairs,
    pack_segments,
    shakespeare_documents,
    span_corruption_raw_length,
    word_start_table,
)
from ..tokenization import load_tokenizer, train_subword_tokenizer, train_wordpiece
from .trainer import CHECKPOINT, TrainConfig, load_run_model, train

# Devlin et al. use lr 1e-4, betas (0.9, 0.999), weight decay 0.01, 10k warm-up steps for BERT-base;
# a tiny model on a small corpus learns faster with a larger rate and a short warm-up.
PRETRAIN_DEFAULTS = TrainConfig(max_steps=2000, batch_size=32, lr=5e-4, min_lr=5e-5, warmup_steps=100,
                                weight_decay=0.01, betas=(0.9, 0.999), eval_interval=250, eval_batches=10,
                                log_interval=10, save_interval=500, out_dir="runs/pretrain-bert")


def _tokenizer(spec: str, corpus: str):
    """'bert-base-uncased' (the real vocabulary), 'train:N' (a new N-token WordPiece on the corpus), or any
    tokenizer load_tokenizer reads."""
    if spec.startswith("train:"):
        return train_wordpiece([corpus], int(spec.removeprefix("train:")))
    return load_tokenizer(spec)


def pretrain_bert(model: str | ModelConfig, data: str, config: TrainConfig, *, tokenizer: str = "bert-base-uncased",
                  max_length: int = 128, nsp: bool = True, whole_word: bool = False,
                  overrides: dict | None = None, resume: bool = False) -> dict:
    """Pretrain BERT with masked LM (+ NSP) on `data` (a corpus name such as 'shakespeare' or a text file).

    model: a preset (bert-tiny, bert-base, ...) or a checkpoint folder to continue from. With nsp the
    rows are [CLS] A [SEP] B [SEP] pairs, half with a random B; without, contiguous 128-token
    segments. Masks are drawn per batch (dynamic masking); validation uses fixed masks.
    Returns the trainer's summary plus `parameters` and the rows used.
    """
    train_text, valid_text = load_corpus(data)
    checkpoint = Path(config.out_dir) / CHECKPOINT
    if resume:
        tok, net = load_tokenizer(checkpoint), load_run_model(config.out_dir)
    else:
        tok = _tokenizer(tokenizer, train_text)
        torch.manual_seed(config.seed)          # the initial weights (or the fresh head) follow the run's seed
        if isinstance(model, str) and Path(model).is_dir():
            net = load_pretrained(model, task="pretraining" if nsp else "masked-lm", fresh_head=True)
        else:
            base = get_preset(model) if isinstance(model, str) else model
            if base.family != "bert":
                raise ConfigError(f"pretrain_bert needs a BERT preset (bert-tiny, bert-base, ...), got family "
                                  f"{base.family!r}")
            changes = {"vocab_size": tok.vocab_size, "pad_token_id": tok.pad_token_id,
                       "max_position": max(base.max_position, max_length)}
            net = build(base.replace(**{**changes, **(overrides or {})}), task="pretraining" if nsp else "masked-lm")
    if tok.mask_token_id is None or tok.cls_token_id is None or tok.sep_token_id is None:
        raise ConfigError(f"{tok!r} lacks [MASK], [CLS] or [SEP]; BERT pretraining needs a WordPiece vocabulary")
    ids = dict(cls_id=tok.cls_token_id, sep_id=tok.sep_token_id, pad_id=tok.pad_token_id)

    def rows_of(text: str, seed: int):
        if not nsp:
            return pack_segments(encode_corpus(text, tok), max_length, **ids)
        encode = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
        # Shakespeare splits into its works; another text into chunks, at least ~20 of them, so
        # that a random next segment can come from another document.
        lines_per_document = max(2, min(500, text.count("\n") // 20))
        documents = shakespeare_documents(text, encode, lines_per_document=lines_per_document)
        return pack_pairs(build_pretraining_pairs(documents, max_length, seed=seed), max_length, **ids)

    train_rows, valid_rows = rows_of(train_text, config.seed), rows_of(valid_text, config.seed + 1)
    starts = word_start_table(tok.backend.id_to_token, tok.vocab_size) if whole_word else None
    batcher = dict(max_length=max_length, mask_token_id=tok.mask_token_id, vocab_size=net.config.vocab_size,
                   special_ids=tok.special_ids, pad_id=tok.pad_token_id, word_starts=starts, nsp=nsp)
    config = TrainConfig(**{**config.to_dict(), "block_size": max_length})
    summary = train(net, train_rows, valid_rows, config, resume=resume, tokenizer=tok,
                    make_batch=MaskedLMBatches(**batcher), make_valid_batch=MaskedLMBatches(**batcher, seed=0))
    summary.update(parameters=net.num_parameters(), train_rows=len(train_rows), valid_rows=len(valid_rows))
    return summary


# ------------------------------------------------------------------------------ T5 and BART denoising

# The BERT settings serve T5 and BART too (T5 used AdaFactor, BART Adam at 4e-4 for large); only the
# run folder differs.
DENOISING_DEFAULTS = TrainConfig(**{**PRETRAIN_DEFAULTS.to_dict(), "out_dir": "runs/pretrain"})
T5_SENTINELS = 100        # <extra_id_0> ... <extra_id_99>, as T5's vocabulary
SENTENCE_ENDS = (".", "!", "?")


def denoising_tokenizer(family: str, text: str, vocab_size: int):
    """A subword vocabulary trained on `text` with the family's special tokens: T5's sentinels
    <extra_id_i>, BART's <mask>. <pad> 0, <s> 1, </s> 2, <unk> 3, then those."""
    extra = [f"<extra_id_{i}>" for i in range(T5_SENTINELS)] if family == "t5" else ["<mask>"]
    return train_subword_tokenizer([text], vocab_size, extra_special_tokens=extra)


def pretrain_seq2seq(family: str, model: str | ModelConfig, data: str, config: TrainConfig = DENOISING_DEFAULTS, *,
                     tokenizer: str | None = None, vocab_size: int = 8000, max_length: int = 128,
                     overrides: dict | None = None, resume: bool = False) -> dict:
    """Pretrain T5 with span corruption (15% of tokens in spans of mean length 3, each span one sentinel,
    §3.1.4) or BART with text infilling (30%, Poisson(3) spans, each span one <mask>) plus sentence
    permutation (§2.2, the final recipe), on `data` (a corpus name such as 'shakespeare' or a text file).

    model: a preset of the family (t5-small, bart-base, t5-tiny, ...) or a checkpoint folder. The
    tokenizer is trained on the corpus (`vocab_size`) unless `tokenizer` names one that has the
    family's special tokens. Rows hold `max_length` tokens of the encoder input. Returns the trainer's
    summary plus `parameters` and the rows used; the checkpoint then fills in masked spans
    (`inference.fill_in`, `tkit fill-mask`).
    """
    if family not in ("t5", "bart"):
        raise ConfigError(f"pretrain_seq2seq pretrains t5 or bart, not {family!r}")
    train_text, valid_text = load_corpus(data)
    checkpoint = Path(config.out_dir) / CHECKPOINT
    if resume:
        tok, net = load_tokenizer(checkpoint), load_run_model(config.out_dir)
    else:
        tok = load_tokenizer(tokenizer) if tokenizer else denoising_tokenizer(family, train_text, vocab_size)
        torch.manual_seed(config.seed)          # the initial weights follow the run's seed
        if isinstance(model, str) and Path(model).is_dir():
            net = load_pretrained(model, **(overrides or {}))
        else:
            base = get_preset(model) if isinstance(model, str) else model
            changes = {"vocab_size": tok.vocab_size, "pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
                       "bos_token_id": tok.bos_token_id,
                       # T5 starts decoding from the pad token, BART from </s>
                       "decoder_start_token_id": tok.pad_token_id if family == "t5" else tok.eos_token_id}
            if base.positions == "learned":
                changes["max_position"] = max(base.max_position, max_length)
            net = build(base.replace(**{**changes, **(overrides or {})}))
    if net.config.family != family:
        raise ConfigError(f"pretrain {family} needs a {family} model, got a {net.config.family} one ({model!r})")
    stream_train, stream_valid = encode_corpus(train_text, tok), encode_corpus(valid_text, tok)
    if family == "t5":
        first = tok.backend.token_to_id("<extra_id_0>")
        if first is None:
            raise ConfigError(f"{tok!r} has no <extra_id_0>; T5 pretraining needs its sentinel tokens")
        sentinels = SentinelIds(first_id=first, count=T5_SENTINELS, step=1)
        raw_length, _ = span_corruption_raw_length(max_length)
        rows = [pack_blocks(s, raw_length)[:, :-1] for s in (stream_train, stream_valid)]  # (N, raw_length)
        make = lambda seed: SpanCorruptionBatches(sentinels, tok.eos_token_id, tok.pad_token_id,  # noqa: E731
                                                  decoder_start_id=net.config.decoder_start_token_id, seed=seed)
    else:
        mask = tok.backend.token_to_id("<mask>")
        if mask is None:
            raise ConfigError(f"{tok!r} has no <mask>; BART pretraining needs a mask token")
        ends = {i for token, i in tok.backend.get_vocab().items() if token.endswith(SENTENCE_ENDS)}
        tokens = DenoisingTokens(bos_id=tok.bos_token_id, eos_id=tok.eos_token_id, mask_id=mask,
                                 pad_id=tok.pad_token_id, sentence_end_ids=ends - set(tok.special_ids))
        rows = [pack_segments(s, max_length, cls_id=tok.bos_token_id, sep_id=tok.eos_token_id,
                              pad_id=tok.pad_token_id) for s in (stream_train, stream_valid)]
        make = lambda seed: DenoisingBatches(tokens, decoder_start_id=net.config.decoder_start_token_id,  # noqa: E731
                                             seed=seed)
    config = TrainConfig(**{**config.to_dict(), "block_size": rows[0].shape[1]})
    summary = train(net, rows[0], rows[1], config, resume=resume, tokenizer=tok, make_batch=make(None),
                    make_valid_batch=make(0))
    summary.update(parameters=net.num_parameters(), train_rows=len(rows[0]), valid_rows=len(rows[1]))
    return summary
