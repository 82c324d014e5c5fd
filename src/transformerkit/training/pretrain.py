"""BERT pretraining end to end (Devlin et al. 2019, §3.1, Appendix A): a text corpus becomes
documents of sentences, pairs for next sentence prediction, and masked batches; the one trainer
runs them. What `tkit pretrain bert` runs; a library user calls `pretrain_bert` the same way.
"""
from __future__ import annotations

from pathlib import Path

from ..config import ModelConfig, get_preset
from ..data.text import encode_corpus, load_corpus
from ..errors import ConfigError
from ..interop import load_pretrained
from ..models import build
from ..objectives import (MaskedLMBatches, build_pretraining_pairs, pack_pairs, pack_segments,
                          shakespeare_documents, word_start_table)
from ..tokenization import load_tokenizer, train_wordpiece
from .trainer import CHECKPOINT, TrainConfig, train


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
        tok, net = load_tokenizer(checkpoint), load_pretrained(checkpoint)
    else:
        tok = _tokenizer(tokenizer, train_text)
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
