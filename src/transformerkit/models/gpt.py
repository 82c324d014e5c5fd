"""GPT-1 (Radford et al. 2018) and GPT-2 (Radford et al. 2019): a stack of decoder blocks
without cross-attention, token + learned position embeddings, and an LM head tied to the
token embedding.

GPT-1 is post-norm with no final norm; GPT-2 moves the norm before each sub-layer and adds
one after the last block (`ln_f`). Both are the same code with a different `ModelConfig`,
and so are CTRL (sinusoidal positions, scaled embeddings, a biased LM head; models/ctrl.py)
and LLaMA (rotary positions, grouped-query attention, RMSNorm, SwiGLU; models/llama.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import GenerationError
from ..layers import (
    DecoderBlock,
    Embeddings,
    KVCache,
    RotaryPositions,
    build_attention_mask,
    make_norm,
    positions_from_mask,
)
from .base import ANY, DecodeState, Model, ModelOutput, causal_lm_loss, supporting


class GPTBody(nn.Module):
    """Embeddings, decoder blocks, final norm: token ids (B, T) -> hidden states (B, T, C).
    With rotary positions, `rotary` gives every block's attention the angles of this forward's positions."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = Embeddings(config)
        self.rotary = RotaryPositions(config.d_head, config.rope_theta) if config.positions == "rotary" else None
        self.h = nn.ModuleList(DecoderBlock(config, i, cross_attention=False) for i in range(config.n_layer))
        self.ln_f = make_norm(config) if config.final_norm else nn.Identity()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: KVCache | None = None,
                need_weights: bool = False) -> tuple[torch.Tensor, list[dict] | None]:
        """attention_mask: (B, past + T), 1 for real tokens, covering cached tokens too."""
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        if self.embed.max_position is not None and past + T > self.embed.max_position:
            raise GenerationError(f"{past + T} tokens do not fit the model's context of "
                                  f"{self.config.max_position}; shorten the input or truncate it")
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=input_ids.device)[None]  # (1, T)
        x = self.embed(input_ids, position_ids)                                        # (B, T, C)
        rope = self.rotary(position_ids, x.dtype) if self.rotary is not None else None  # (B or 1, 1, T, D) x 2
        mask, is_causal = build_attention_mask(T, past + T, key_padding=attention_mask, causal=True,
                                               q_offset=past, device=input_ids.device)
        attentions = []
        for block in self.h:
            x, weights = block(x, attn_mask=mask, is_causal=is_causal, cache=cache, need_weights=need_weights,
                               rope=rope)
            attentions.append(weights)
        if cache is not None:
            cache.advance(T)
        return self.ln_f(x), (attentions if need_weights else None)


class GPTModel(Model):
    """What the GPT heads share: the family, the positions it honours (absolute ones), the body.
    Grouped-query attention and a biased LM head are honoured too."""

    family = "gpt"
    supports = supporting(Model.supports, positions=("learned", "sinusoidal", "none"), n_kv_head=ANY,
                          lm_head_bias=ANY)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.transformer = GPTBody(config)


class GPT(GPTModel):
    """Causal language model: logits for the next token at every position."""

    task = "lm"
    can_generate = True

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=config.lm_head_bias)
        self.init_weights()
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.embed.tokens.weight

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                cache: KVCache | None = None, need_weights: bool = False, last_only: bool = False) -> ModelOutput:
        """last_only: compute logits for the last position only (generation needs no more)."""
        x, attentions = self.transformer(input_ids, attention_mask, position_ids, cache, need_weights)
        logits = self.lm_head(x[:, -1:] if last_only else x)                          # (B, T, V)
        loss = causal_lm_loss(logits, labels, self.config.label_smoothing) if labels is not None else None
        return ModelOutput(logits=logits, loss=loss, hidden_states=x, attentions=attentions)

    @property
    def decoder_context(self) -> int | None:
        """Most positions the decoder can attend over (prompt + generated); None without a position table."""
        return self.transformer.embed.max_position

    # The per-step function of the one decoding loop in generation.py.
    def decode_init(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_new_tokens: int):
        """Allocate the KV cache; decoding starts from the prompt itself. Returns (state, prompt)."""
        B, T = input_ids.shape
        max_length = T + max_new_tokens
        p = next(self.parameters())
        cache = KVCache(self.config.n_layer, B, self.config.kv_heads, max_length, self.config.d_head,
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
            position_ids = positions_from_mask(mask, T, past, tokens.device)
        out = self(tokens, attention_mask=mask, position_ids=position_ids, cache=state.cache, last_only=True)
        return out.logits[:, -1]


class GPTForSequenceClassification(GPTModel):
    """GPT-1 style fine-tuning head (Radford et al. 2018, §3.2): a linear layer on the hidden state
    of the last real token of each sequence."""

    task = "sequence-classification"
    head_modules = ("score.",)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.score = nn.Linear(config.d_model, config.num_labels, bias=False)
        self.init_weights()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, need_weights: bool = False) -> ModelOutput:
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
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
        return ModelOutput(logits=logits, loss=loss, hidden_states=x, attentions=attentions)


# --- presets ---------------------------------------------------------------------------------------

def gpt2_config(d_model: int, n_layer: int, n_head: int, **kw) -> ModelConfig:
    """GPT-2 (Radford et al. 2019): pre-norm, final LayerNorm, GELU (tanh), 1024 context."""
    return ModelConfig(family="gpt", vocab_size=50257, d_model=d_model, n_layer=n_layer, n_head=n_head,
                       d_ff=4 * d_model, max_position=1024, activation="gelu_tanh", norm_position="pre",
                       final_norm=True, bos_token_id=50256, eos_token_id=50256, **kw)


def gpt3_config(d_model: int, n_layer: int, n_head: int, d_head: int = 0) -> ModelConfig:
    """GPT-3 paper sizes (Brown et al. 2020, Table 2.1): GPT-2 blocks, 2048 context (dense attention).

    The table's n_head x d_head does not always equal d_model (1.3B: 24 x 128 vs 2048), while its
    parameter counts assume d_model-wide attention; we keep n_head * d_head = d_model (1.3B: 16 x 128;
    13B: 40 x 128 = 5120 for d_model 5140, as close as integers allow).
    """
    return gpt2_config(d_model, n_layer, n_head, d_head=d_head).replace(max_position=2048)


def gpt1_config(d_model: int, n_layer: int, n_head: int, max_position: int = 512) -> ModelConfig:
    """GPT-1 (Radford et al. 2018): post-norm, no final norm, GELU (tanh form, as its code and
    transformers' openai-gpt), 512 context, 40,478 BPE vocab."""
    return ModelConfig(family="gpt", vocab_size=40478, d_model=d_model, n_layer=n_layer, n_head=n_head,
                       d_ff=4 * d_model, max_position=max_position, activation="gelu_tanh", norm_position="post",
                       final_norm=False)


PRESETS = {
    "gpt1": lambda: gpt1_config(768, 12, 12),
    "gpt2": lambda: gpt2_config(768, 12, 12),
    "gpt2-medium": lambda: gpt2_config(1024, 24, 16),
    "gpt2-large": lambda: gpt2_config(1280, 36, 20),
    "gpt2-xl": lambda: gpt2_config(1600, 48, 25),
    "gpt3-125m": lambda: gpt3_config(768, 12, 12),
    "gpt3-350m": lambda: gpt3_config(1024, 24, 16),
    "gpt3-760m": lambda: gpt3_config(1536, 24, 16),
    "gpt3-1.3b": lambda: gpt3_config(2048, 24, 16),
    "gpt3-2.7b": lambda: gpt3_config(2560, 32, 32),
    "gpt3-6.7b": lambda: gpt3_config(4096, 32, 32),
    "gpt3-13b": lambda: gpt3_config(5140, 40, 40, d_head=128),
    "gpt3-175b": lambda: gpt3_config(12288, 96, 96),
    # Tiny shapes for tests and the CPU demo.
    "gpt2-tiny": lambda: gpt2_config(64, 2, 4).replace(max_position=128),
    "gpt1-tiny": lambda: gpt1_config(64, 2, 4, max_position=128),
}
