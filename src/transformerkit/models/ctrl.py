"""CTRL (Keskar et al. 2019, "CTRL: A Conditional Transformer Language Model for Controllable Generation"):
the decoder-only stack of GPT-2 (models/gpt.py), trained on text whose first token is a *control code*
("Wikipedia", "Reviews", "Links", ...) naming the domain, style or task it comes from, so that the model
learns p(x | c) = prod_i p(x_i | x_<i, c) (§2, Eq. 2) and a prompt's first token steers what it writes.

There is no CTRL block and no CTRL class: `ctrl_config` is a GPT config that differs from GPT-2 in
five fields, each one the paper's (§3) or its released code's choice:

    positions="sinusoidal", sinusoidal_layout="halves"
                             fixed sinusoidal positions (Vaswani et al. 2017, §3.5) instead of a learned
                             table, laid out as all sines then all cosines (CTRL's code concatenates them)
    scale_embeddings=True    token embeddings times sqrt(d_model) before the positions are added
    activation="relu"        a ReLU feed-forward (GPT-2: GELU), d_ff = 8192 for d_model = 1280
    norm_eps=1e-6            LayerNorm epsilon of every norm (GPT-2: 1e-5); pre-norm with a final norm, as GPT-2
    lm_head_bias=True        the LM head, tied to the token table, has a trained bias of its own

and no attention dropout (`attn_dropout=0`). The control code needs no code here: it is simply the first
token of the prompt (`input_ids[:, 0]`, an id from the CTRL tokenizer's control codes), embedded and
attended to like any other token. Checkpoints convert to and from transformers' `CTRLLMHeadModel`
(interop/ctrl.py).
"""
from __future__ import annotations

from ..config import ModelConfig


def ctrl_config(d_model: int, n_layer: int, n_head: int, d_ff: int, *, vocab_size: int = 246534,
                max_position: int = 256) -> ModelConfig:
    """A CTRL-shaped GPT: sinusoidal positions (sines then cosines), embeddings x sqrt(d_model), pre-norm
    LayerNorm (eps 1e-6) with a final norm, ReLU feed-forward, a tied LM head with a bias of its own.
    CTRL's released model: 246,534-token BPE vocabulary, 256-token context (§3)."""
    return ModelConfig(family="gpt", vocab_size=vocab_size, d_model=d_model, n_layer=n_layer, n_head=n_head,
                       d_ff=d_ff, max_position=max_position, activation="relu", norm="layernorm",
                       norm_position="pre", norm_eps=1e-6, final_norm=True, bias=True, positions="sinusoidal",
                       sinusoidal_layout="halves", scale_embeddings=True, tie_embeddings=True, lm_head_bias=True,
                       dropout=0.1, attn_dropout=0.0)


PRESETS = {
    # The released model (§3): 48 layers, d_model 1280, 16 heads, d_ff 8192: 1.63B parameters.
    "ctrl": lambda: ctrl_config(1280, 48, 16, 8192),
    # A tiny shape for tests.
    "ctrl-tiny": lambda: ctrl_config(64, 2, 4, 128, vocab_size=1000, max_position=128),
}
