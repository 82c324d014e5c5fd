"""What every model shares: the contract it keeps with the rest of the library (`Model`), its
output type, the LM losses, initialisation, parameter counting, the decoding state, and saving
in the Hugging Face layout."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError, GenerationError
from ..layers import KVCache

IGNORE_INDEX = -100   # the label of a position that is not scored (torch's and transformers' convention)


@dataclass
class ModelOutput:
    logits: torch.Tensor                      # (B, T, V) for LMs, (B, num_labels) for classifiers
    loss: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None  # last layer, (B, T, C)
    attentions: list[dict] | None = None      # per layer {"self": (B, H, T, S), "cross": ...} when asked
    encoder_hidden_states: torch.Tensor | None = None  # encoder-decoders: the encoder output (B, S, C)
    encoder_attentions: list[dict] | None = None        # encoder-decoders: per encoder layer {"self": ...}


@dataclass
class DecodeState:
    """What a decoder carries from one generation step to the next.

    key_padding is (B, max_len), True for real tokens, covering prompt and generated tokens;
    None when no row has padding. memory/memory_mask hold the encoder output of encoder-decoders,
    memory_keys the attention keys a recurrent decoder precomputes from it. A recurrent decoder has
    no KV cache (cache=None) and keeps its hidden state in `recurrent` (name -> tensor); every
    tensor there is batch-first and follows the beams.
    """
    cache: KVCache | None
    key_padding: torch.Tensor | None = None
    memory: torch.Tensor | None = None
    memory_mask: torch.Tensor | None = None
    memory_keys: torch.Tensor | None = None
    recurrent: dict[str, torch.Tensor] = field(default_factory=dict)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (beam search). Beam search moves a row only among the beams of its
        own source, which share one encoder output: the encoder side (memory, its mask and keys, the
        cross-attention K/V) is the same for all of them and is left as it is."""
        if self.cache is not None:
            self.cache.reorder(index)
        if self.key_padding is not None:
            self.key_padding = self.key_padding.index_select(0, index)
        for name, value in self.recurrent.items():
            self.recurrent[name] = value.index_select(0, index)


    def select(self, index: torch.Tensor) -> DecodeState:
        """Keep batch rows `index` (a row may repeat), encoder side included: rows leave a batch. Returns self."""
        if self.cache is not None:
            self.cache.select(index)
        for name in ("key_padding", "memory", "memory_mask", "memory_keys"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).index_select(0, index))
        for name, value in self.recurrent.items():
            self.recurrent[name] = value.index_select(0, index)
        return self

    @property
    def lengths(self) -> torch.Tensor:
        """Real (not padding) positions of each row in the cache (B,); rows are padded on the left only."""
        L = self.cache.length
        if self.key_padding is None:
            return torch.full((self.cache.k[0].shape[0],), L, dtype=torch.long, device=self.cache.k[0].device)
        return self.key_padding[:, :L].sum(1)

    @classmethod
    def gather_rows(cls, parts: list[tuple[DecodeState, torch.Tensor]], room: int) -> DecodeState:
        """One decoding state of some rows of several (continuous batching: finished rows leave, new
        prompts join between two steps). parts: (state, row indices); a row may be given twice (n
        samples of one prompt). Rows are right-aligned and left-padded, as a batch of prompts of several
        lengths is, so the model's positions (counted from each row's first real token) and masks stay
        right. `room`: positions left free for the tokens still to come. Decoder-only states only: an
        encoder-decoder's rows carry encoder outputs of several lengths (they decode in fixed batches)."""
        if any(s.cache is None or s.memory is not None or s.recurrent for s, _ in parts):
            raise GenerationError("only a decoder-only model's decoding rows can be regrouped")
        lengths = torch.cat([s.lengths[index] for s, index in parts])                  # (B,)
        keep = int(lengths.max())
        cache = KVCache.gather_rows([(s.cache, index) for s, index in parts], keep, room)
        # Real positions: each row's last `lengths` of the kept ones, and all of the room.
        columns = torch.arange(keep + room, device=lengths.device)
        key_padding = columns[None, :] >= (keep - lengths)[:, None]                   # (B, keep + room)
        return cls(cache=cache, key_padding=None if bool(key_padding.all()) else key_padding)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean next-token cross-entropy: position t predicts labels[t + 1]; IGNORE_INDEX is ignored."""
    # Shift the labels, not the logits: logits[:, :-1] would copy the (B, T, V) logits, and their
    # gradient would be zero-filled and copied back.
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX).flatten()
    logits = logits.flatten(0, 1)
    # On a CPU, about 2M logits (8 MiB in fp32) at a time: each chunk's fp32 copy, log-softmax and
    # gradient stay in cache instead of streaming (B T, V) fp32 buffers through memory. GPT-2, 4 x 256
    # tokens, 2 threads: loss forward + backward 3.9x faster in fp32, 6.8x under bf16 autocast
    # (docs/benchmarks.md). Each row's terms are the same; the chunk sums are added in fp64, so the
    # mean stays within an ulp or two of F.cross_entropy's.
    rows = max(1, 2**21 // logits.shape[-1])
    if logits.device.type != "cpu" or len(logits) <= rows:
        return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)
    sums = [F.cross_entropy(x.float(), t, ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing, reduction="sum")
            for x, t in zip(logits.split(rows), targets.split(rows))]
    return (torch.stack(sums).sum(dtype=torch.float64) / (targets != IGNORE_INDEX).sum()).float()


def token_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of logits (..., V) against labels (...) at the same positions (a seq2seq
    decoder's labels are already aligned, MLM's are the masked positions); IGNORE_INDEX is ignored."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)


ANY = object()   # in `supports`: every value of the field is honoured


def supporting(base: dict, **fields) -> dict:
    """A `supports` table: `base` with the allowed values of some fields replaced (ANY: all values)."""
    table = {**base, **fields}
    return {name: allowed for name, allowed in table.items() if allowed is not ANY}


class Model(nn.Module):
    """The contract between a model and the rest of the library; nothing else is probed.

    Every model class declares:
        family, task        the config family it builds and what its head does; `models.MODELS` is
                            built from these, and `save_pretrained` writes `task`
        is_encoder_decoder  generation then returns the decoder's tokens from its start token, and
                            the trainer counts target tokens
        can_generate        it implements `decode_init` / `decode_step`
        head_modules        name prefixes of the head's parameters: what a pretrained body lacks, left
                            freshly initialised by `load(..., fresh_head=True)`
        supports            config fields this class honours only with some values: {field: allowed};
                            `check_config` refuses any other value, so no field is silently ignored
    A model that generates provides the per-step functions of the one decoding loop (generation.py):
        decode_init(input_ids, attention_mask, max_new_tokens) -> (DecodeState, tokens to feed first)
        decode_step(state, tokens (B, t)) -> next-token logits (B, V)
        decoder_context     the most positions a decoder-only model attends over (prompt + new
                            tokens), or None when nothing bounds the prompt (encoder-decoders)
    The KV cache is advanced by the model, not by the loop: each stack's forward calls
    `cache.advance(T)` once, after every layer has appended its T new positions.
    """

    config: ModelConfig
    family: ClassVar[str]
    task: ClassVar[str]
    is_encoder_decoder: ClassVar[bool] = False
    can_generate: ClassVar[bool] = False
    head_modules: ClassVar[tuple[str, ...]] = ()
    # Fields whose other values no family honours unless it says so: encoder-decoder settings, the RNN's `extra`,
    # rotary positions and grouped-query attention (the decoder-only stack), CTRL's LM-head bias.
    supports: ClassVar[dict[str, tuple]] = {"n_decoder_layer": (0,), "extra": ({},), "type_vocab_size": (0,),
                                            "final_logits_bias": (False,), "scale_decoder_outputs": (None,),
                                            "decoder_start_token_id": (None,), "classifier_dropout": (None,),
                                            "positions": ("learned", "sinusoidal", "relative", "none"),
                                            "n_kv_head": (0,), "lm_head_bias": (False,)}
    residual_projections: ClassVar[tuple[str, ...]] = ("self_attn.out", "cross_attn.out", "ffn.w_2")
    generation_config = None   # a generation.GenerationConfig: read by tk.load, used by tk.generate when set

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.check_config(config)
        self.config = config

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        """Refuse a config of another family, or a field value this class cannot honour."""
        if config.family != cls.family:
            raise ConfigError(f"{cls.__name__} builds {cls.family!r} models, not family {config.family!r}")
        for name, allowed in cls.supports.items():
            value = getattr(config, name)
            if not any(value == a and isinstance(value, bool) == isinstance(a, bool) for a in allowed):
                shown = " or ".join(repr(a) for a in allowed)
                raise ConfigError(f"{cls.__name__} cannot honour {name}={value!r}; it takes {name}={shown}. "
                                  f"Change the field, or pick a family that has it")

    @property
    def decoder_context(self) -> int | None:
        return None

    def decode_init(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_new_tokens: int):
        raise GenerationError(f"{type(self).__name__} ({self.task}) does not generate text; load or build a "
                              "decoder (a causal LM or an encoder-decoder)")

    def decode_step(self, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        raise GenerationError(f"{type(self).__name__} ({self.task}) does not generate text")

    def init_weights(self) -> None:
        """GPT-2's initialisation: N(0, 0.02) for weights, zero biases, and the projections that
        write into the residual stream scaled by 1/sqrt(2 n_layer) so its variance does not grow
        with depth (Radford et al. 2019, §2.3)."""
        std = self.config.init_std
        n_residual_layers = 2 * (self.config.n_layer + self.config.n_decoder_layer)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                scale = 1 / math.sqrt(n_residual_layers) if name.endswith(self.residual_projections) else 1.0
                nn.init.normal_(module.weight, mean=0.0, std=std * scale)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (tied weights once)."""
        params = {id(p): p for p in self.parameters()}
        if exclude_embeddings:
            for m in self.modules():
                if isinstance(m, nn.Embedding):
                    params.pop(id(m.weight), None)
        return sum(p.numel() for p in params.values())

    def save_pretrained(self, directory) -> None:
        """Write config.json + model.safetensors in the Hugging Face layout (transformers loads it)."""
        from ..interop import save_pretrained  # converters sit above the models; resolved at call time
        save_pretrained(self, directory)
