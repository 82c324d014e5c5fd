"""Causal language modelling end to end: corpus -> tokenizer -> blocks -> model -> `train` -> sample.

What `tkit train` runs; a library user calls `train_lm` the same way.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import ModelConfig
from ..data.text import encode_corpus, load_corpus, pack_blocks
from ..errors import ConfigError
from ..generation import GenerationConfig, generate_text
from ..interop import load_pretrained
from ..models import build, get_preset
from ..tokenization import Tokenizer, char_tokenizer, load_tokenizer, word_tokenizer
from .trainer import CHECKPOINT, TrainConfig, load_run_model, train


def _tokenizer(spec: str, train_text: str, valid_text: str) -> Tokenizer:
    """'char' builds a character vocabulary from the corpus itself, 'word' a word vocabulary from its training
    text (on ptb exactly PTB's 10,000 words, so validation words it lacks are <unk>, as in PTB); anything else
    is load_tokenizer's."""
    if spec == "char":
        return char_tokenizer(train_text + valid_text)
    if spec == "word":
        return word_tokenizer(train_text)
    return load_tokenizer(spec)


def _model(spec: str | ModelConfig, tokenizer: Tokenizer, block_size: int, overrides: dict):
    """A fresh model from a preset or config, sized to the tokenizer, or a checkpoint to fine-tune."""
    if isinstance(spec, str) and Path(spec).is_dir():
        model = load_pretrained(spec)
        if overrides:
            raise ConfigError("model overrides (--set) apply to a preset, not to a checkpoint being fine-tuned")
    else:
        config = get_preset(spec) if isinstance(spec, str) else spec
        # A row of block_size + 1 tokens gives block_size next-token predictions.
        changes = {"vocab_size": tokenizer.vocab_size, "max_position": max(config.max_position, block_size + 1),
                   "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
        model = build(config.replace(**{**changes, **overrides}))
    if model.config.vocab_size < tokenizer.vocab_size:
        raise ConfigError(f"the model's vocabulary ({model.config.vocab_size}) is smaller than the tokenizer's "
                          f"({tokenizer.vocab_size}); use a matching tokenizer")
    return model


def train_lm(model: str | ModelConfig, data: str, config: TrainConfig, tokenizer: str = "gpt2",
             overrides: dict | None = None, resume: bool = False, sample_prompt: str | None = "\n",
             sample_tokens: int = 200) -> dict:
    """Train a causal LM on `data` (a catalog name such as 'shakespeare', or a text file).

    model: a preset name, a ModelConfig, or a checkpoint folder to continue from (fine-tuning).
    tokenizer: 'char', 'word', 'gpt2', or anything `load_tokenizer` accepts. With resume=True the model
    and the tokenizer come from config.out_dir/checkpoint and training continues exactly.
    Returns the trainer's summary plus `sample`: text generated from `sample_prompt`.
    """
    # The sample's own settings (not a fine-tuned checkpoint's), checked now rather than after the training.
    sample = GenerationConfig(max_new_tokens=sample_tokens, do_sample=True, top_k=50) if sample_prompt is not None \
        else None
    train_text, valid_text = load_corpus(data)
    checkpoint = Path(config.out_dir) / CHECKPOINT
    if resume:
        tok = load_tokenizer(checkpoint)
        net = load_run_model(config.out_dir)
    else:
        tok = _tokenizer(tokenizer, train_text, valid_text)
        torch.manual_seed(config.seed)          # the initial weights follow the run's seed
        net = _model(model, tok, config.block_size, overrides or {})
    train_blocks = pack_blocks(encode_corpus(train_text, tok), config.block_size)
    valid_blocks = pack_blocks(encode_corpus(valid_text, tok), config.block_size)
    summary = train(net, train_blocks, valid_blocks, config, resume=resume, tokenizer=tok)
    summary["parameters"] = net.num_parameters()
    if sample is not None:
        summary["sample"] = generate_text(net, tok, sample_prompt, sample, seed=config.seed)[0]
    return summary
