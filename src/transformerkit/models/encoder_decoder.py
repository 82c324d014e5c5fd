"""The encoder-decoder shared by the original Transformer, T5 and BART (Vaswani et al. 2017, Figure 1).

An encoder stack reads the source once; a decoder stack writes the target one token at a time,
each block attending to its own past (masked self-attention) and to the encoder output
(cross-attention). The three families differ only in what the config says (norm before or
after, LayerNorm or RMSNorm, activation, positions) and in a few things of their own, which
their files add: T5's shared relative position bias and head scaling (t5.py), BART's learned
positions with an offset and embedding LayerNorm (bart.py), and the Transformer's scaled
embeddings with sinusoidal positions (transformer.py).

Keyword names follow `transformers`: input_ids / attention_mask for the source,
decoder_input_ids / decoder_attention_mask for the target, labels aligned with the decoder
inputs (decoder_input_ids = labels shifted right behind the start token).
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError, GenerationError
from ..layers import (
    DecoderBlock,
    Embeddings,
    EncoderBlock,
    KVCache,
    RelativePositionBias,
    build_attention_mask,
    make_norm,
    positions_from_mask,
)
from .base import ANY, IGNORE_INDEX, DecodeState, Model, ModelOutput, supporting, token_loss


class Stack(nn.Module):
    """N encoder blocks, or N decoder blocks with cross-attention, over shared embeddings.

    With relative positions, the stack owns one bias table (T5 keeps it in its first layer and
    shares it with the others, §2.1): bidirectional in the encoder, causal in the decoder.
    """

    def __init__(self, config: ModelConfig, tokens: nn.Embedding, n_layer: int, is_decoder: bool):
        super().__init__()
        self.is_decoder = is_decoder
        self.embed = Embeddings(config, tokens)
        block = (lambda i: DecoderBlock(config, i)) if is_decoder else (lambda i: EncoderBlock(config, i))
        self.layers = nn.ModuleList(block(i) for i in range(n_layer))
        self.relative_bias = None
        if config.positions == "relative":
            self.relative_bias = RelativePositionBias(config.n_head, config.relative_buckets,
                                                      config.relative_max_distance, bidirectional=not is_decoder)
        self.final_norm = make_norm(config) if config.final_norm else None
        self.drop = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                memory: torch.Tensor | None = None, memory_mask: torch.Tensor | None = None,
                cache: KVCache | None = None, need_weights: bool = False):
        """input_ids (B, T); attention_mask (B, past + T), 1 for real tokens; memory (B, S, C) and
        memory_mask (B, S) for a decoder. Returns (hidden (B, T, C), per-layer attention weights or None)."""
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        # From the shapes, not the position ids: no device sync per step. Positions count real tokens
        # only, so past + T bounds them.
        if self.embed.max_position is not None and past + T > self.embed.max_position:
            raise GenerationError(f"{past + T} tokens exceed the model's {self.embed.max_position} positions; "
                                  "shorten or truncate the input")
        x = self.embed(input_ids, positions_from_mask(attention_mask, T, past, input_ids.device))  # (B, T, C)
        bias = self.relative_bias(T, past + T, q_offset=past) if self.relative_bias is not None else None
        mask, is_causal = build_attention_mask(T, past + T, key_padding=attention_mask, causal=self.is_decoder,
                                               q_offset=past, bias=bias, device=input_ids.device)
        cross = {}   # what decoder blocks read besides x: the encoder output and the KV cache
        if self.is_decoder:
            cross["memory"] = memory
            cross["memory_mask"] = None if memory_mask is None else memory_mask[:, None, None, :].bool()
            cross["cache"] = cache
        attentions = []
        for layer in self.layers:
            x, weights = layer(x, attn_mask=mask, is_causal=is_causal, need_weights=need_weights, **cross)
            attentions.append(weights)
        if cache is not None:
            cache.advance(T)
        if self.final_norm is not None:
            x = self.drop(self.final_norm(x))
        return x, (attentions if need_weights else None)


class EncoderDecoder(Model):
    """Shared token embedding, encoder stack, decoder stack, LM head tied to the embedding.

    Subclasses (the families) set their family and may override `head` (the logits). Every
    position kind, embedding setting and the output bias are honoured; segments are not.
    """

    task = "seq2seq"
    is_encoder_decoder = True
    can_generate = True
    supports = supporting(Model.supports, n_decoder_layer=ANY, decoder_start_token_id=ANY, final_logits_bias=ANY)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        if config.n_decoder_layer < 1:
            raise ConfigError(f"an encoder-decoder needs n_decoder_layer >= 1, got {config.n_decoder_layer}")
        if config.decoder_start_token_id is None:
            raise ConfigError("an encoder-decoder needs decoder_start_token_id (the first decoder input)")
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = Stack(config, self.shared, config.n_layer, is_decoder=False)
        self.decoder = Stack(config, self.shared, config.n_decoder_layer, is_decoder=True)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.final_logits_bias:   # BART and Marian add a fixed bias to the logits
            self.register_buffer("final_logits_bias", torch.zeros(1, config.vocab_size))
        else:
            self.final_logits_bias = None
        self.init_weights()
        if config.tie_embeddings:
            self.lm_head.weight = self.shared.weight

    def head(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, V)
        logits = self.lm_head(x)
        return logits if self.final_logits_bias is None else logits + self.final_logits_bias

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, need_weights: bool = False):
        """The encoder output (B, S, C) and, when asked, its attention weights."""
        return self.encoder(input_ids, attention_mask, need_weights=need_weights)

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """Decoder inputs from labels: the start token, then labels[:-1]; -100 becomes padding."""
        start = torch.full_like(labels[:, :1], self.config.decoder_start_token_id)
        shifted = torch.cat([start, labels[:, :-1]], dim=1)
        pad = self.config.pad_token_id if self.config.pad_token_id is not None else 0
        return shifted.masked_fill(shifted == IGNORE_INDEX, pad)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                decoder_attention_mask: torch.Tensor | None = None, need_weights: bool = False,
                memory: torch.Tensor | None = None) -> ModelOutput:
        """Logits (B, T, V) for the target; given labels (B, T), aligned with decoder_input_ids
        (-100 ignored), the loss, with the config's label smoothing."""
        if decoder_input_ids is None:
            if labels is None:
                raise GenerationError("give decoder_input_ids or labels (the target) to an encoder-decoder")
            decoder_input_ids = self.shift_right(labels)
        encoder_attentions = None
        if memory is None:
            memory, encoder_attentions = self.encode(input_ids, attention_mask, need_weights)
        x, attentions = self.decoder(decoder_input_ids, decoder_attention_mask, memory=memory,
                                     memory_mask=attention_mask, need_weights=need_weights)
        logits = self.head(x)                                                           # (B, T, V)
        loss = None
        if labels is not None:
            loss = token_loss(logits, labels, self.config.label_smoothing)
        return ModelOutput(logits=logits, loss=loss, hidden_states=x, attentions=attentions,
                           encoder_hidden_states=memory, encoder_attentions=encoder_attentions)

    # The per-step function of the one decoding loop in generation.py.
    def decode_init(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_new_tokens: int):
        """Run the encoder once; the decoder starts from its start token. Returns (state, (B, 1) start)."""
        memory, _ = self.encode(input_ids, attention_mask)                             # (B, S, C)
        B = input_ids.shape[0]
        if self.config.positions != "relative" and max_new_tokens + 1 > self.config.max_position:
            raise GenerationError(f"max_new_tokens={max_new_tokens} exceeds the decoder's "
                                  f"{self.config.max_position} positions; lower it")
        cache = KVCache(self.config.n_decoder_layer, B, self.config.n_head, max_new_tokens + 1,
                        self.config.d_head, memory.dtype, memory.device)
        start = torch.full((B, 1), self.config.decoder_start_token_id, dtype=torch.long, device=input_ids.device)
        memory_mask = None if attention_mask is None or bool(attention_mask.all()) else attention_mask
        return DecodeState(cache=cache, memory=memory, memory_mask=memory_mask), start

    def decode_step(self, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        """Feed decoder tokens (B, t) after those cached; return next-token logits (B, V)."""
        x, _ = self.decoder(tokens, memory=state.memory, memory_mask=state.memory_mask, cache=state.cache)
        return self.head(x[:, -1:])[:, -1]
