"""GPT-1 (Radford et al. 2018) and GPT-2 (Radford et al. 2019): a stack of decoder blocks
without cross-attention, token + learned position embeddings, and an LM head tied to the
token embedding.

GPT-1 is post-norm with no final norm; GPT-2 moves the norm before each sub-layer and adds
one after the last block (`ln_f`). Both are the same code with a different `ModelConfig`.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import GenerationError
from ..layers import DecoderBlock, KVCache, build_attention_mask, make_norm
from .base import DecodeState, Model, ModelOutput, causal_lm_loss


class GPTBody(nn.Module):
    """Embeddings, decoder blocks, final norm: token ids (B, T) -> hidden states (B, T, C)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.wpe = nn.Embedding(config.max_position, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(DecoderBlock(config, i, cross_attention=False) for i in range(config.n_layer))
        self.ln_f = make_norm(config) if config.final_norm else nn.Identity()

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache: KVCache | None = None,
                need_weights: bool = False):
        """attention_mask: (B, past + T), 1 for real tokens, covering cached tokens too."""
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        if past + T > self.config.max_position:
            raise GenerationError(f"{past + T} tokens do not fit the model's context of "
                                  f"{self.config.max_position}; shorten the input or truncate it")
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=input_ids.device)[None]  # (1, T)
        x = self.drop(self.wte(input_ids) + self.wpe(position_ids))                    # (B, T, C)
        mask, is_causal = build_attention_mask(T, past + T, key_padding=attention_mask, causal=True,
                                               q_offset=past, device=input_ids.device)
        attentions = []
        for block in self.h:
            x, weights = block(x, attn_mask=mask, is_causal=is_causal, cache=cache, need_weights=need_weights)
            attentions.append(weights)
        if cache is not None:
            cache.advance(T)
        return self.ln_f(x), (attentions if need_weights else None)


class GPT(Model):
    """Causal language model: logits for the next token at every position."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = GPTBody(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.init_weights()
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

    def forward(self, input_ids, attention_mask=None, labels=None, position_ids=None,
                cache: KVCache | None = None, need_weights: bool = False, last_only: bool = False) -> ModelOutput:
        """last_only: compute logits for the last position only (generation needs no more)."""
        x, attentions = self.transformer(input_ids, attention_mask, position_ids, cache, need_weights)
        logits = self.lm_head(x[:, -1:] if last_only else x)                          # (B, T, V)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return ModelOutput(logits=logits, loss=loss, hidden_states=x, attentions=attentions)

    @property
    def decoder_context(self) -> int:
        """Most positions the decoder can attend over (prompt + generated)."""
        return self.config.max_position

    # The per-step function of the one decoding loop in generation.py.
    def decode_init(self, input_ids, attention_mask, max_new_tokens: int):
        """Allocate the KV cache; decoding starts from the prompt itself. Returns (state, prompt)."""
        B, T = input_ids.shape
        max_length = T + max_new_tokens
        p = next(self.parameters())
        cache = KVCache(self.config.n_layer, B, self.config.n_head, max_length, self.config.d_head,
                        p.dtype, p.device)
        key_padding = None
        if attention_mask is not None and not bool(attention_mask.all()):
            key_padding = torch.ones(B, max_length, dtype=torch.bool, device=input_ids.device)
            key_padding[:, :T] = attention_mask.bool()
        return DecodeState(cache=cache, key_padding=key_padding), input_ids

    def decode_step(self, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        """Feed tokens (B, T) after what is cached; return next-token logits (B, V)."""
        past, T = state.cache.length, tokens.shape[1]
        mask = position_ids = None
        if state.key_padding is not None:
            mask = state.key_padding[:, : past + T]
            # Left padding: a row's first real token is position 0, as in training.
            position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
        out = self(tokens, attention_mask=mask, position_ids=position_ids, cache=state.cache, last_only=True)
        return out.logits[:, -1]


class GPTForSequenceClassification(Model):
    """GPT-1 style fine-tuning head (Radford et al. 2018, §3.2): a linear layer on the hidden state
    of the last real token of each sequence."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = GPTBody(config)
        self.score = nn.Linear(config.d_model, config.num_labels, bias=False)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, labels=None, need_weights: bool = False) -> ModelOutput:
        x, attentions = self.transformer(input_ids, attention_mask, need_weights=need_weights)
        B, T = input_ids.shape
        real = attention_mask
        if real is None and self.config.pad_token_id is not None:
            real = input_ids != self.config.pad_token_id
        if real is None:
            last = torch.full((B,), T - 1, device=input_ids.device)
        else:  # right padding: the last position that holds a real token
            last = (real.long() * torch.arange(T, device=input_ids.device)).argmax(-1)
        logits = self.score(x[torch.arange(B, device=x.device), last])                 # (B, num_labels)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels)
        return ModelOutput(logits=logits, loss=loss, hidden_states=x, attentions=attentions)
