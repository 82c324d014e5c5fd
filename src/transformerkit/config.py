"""`ModelConfig`: one dataclass that describes every model of the family.

The shared blocks in `layers/` read only this config: pre- or post-norm, LayerNorm or
RMSNorm, the activation, biases, the kind of positions and the attention scaling are
all fields here, so a model file only adds what is really its own. Each family's presets
live in its model file (`models/gpt.py`: gpt2, ...); `models.get_preset` finds them by name.
A family that cannot honour a field's value refuses it when the model is built
(`Model.check_config`), so no field is silently ignored.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError
from .files import atomic_write

FAMILIES = ("gpt", "llama", "bert", "transformer", "t5", "bart", "seq2seq_rnn")
# Fields that older checkpoints (model_type "transformerkit") kept in `extra`.
LEGACY_EXTRA = ("type_vocab_size", "classifier_dropout", "sinusoidal_layout", "final_logits_bias",
                "scale_decoder_outputs")


class DictMixin:
    """to_dict / from_dict for a settings dataclass; unknown keys are an error, not silently dropped."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} fields {sorted(unknown)}; known fields are {sorted(known)}")
        return cls(**d)


@dataclass
class ModelConfig(DictMixin):
    family: str = "gpt"
    vocab_size: int = 50257
    d_model: int = 768            # C: width of the residual stream
    n_layer: int = 12             # decoder layers (decoder-only) or encoder layers
    n_decoder_layer: int = 0      # encoder-decoders only
    n_head: int = 12
    n_kv_head: int = 0            # key/value heads, shared by groups of query heads (GQA); 0 means n_head (MHA)
    d_head: int = 0               # 0 means d_model // n_head
    d_ff: int = 3072
    max_position: int = 1024      # context length (learned/sinusoidal tables)
    activation: str = "gelu_tanh"  # relu | gelu | gelu_tanh | silu | gated-gelu | gated-gelu_tanh | gated-relu
    #                               | gated-silu (SwiGLU: LLaMA)
    norm: str = "layernorm"       # layernorm | rmsnorm
    norm_position: str = "pre"    # pre (GPT-2, T5) | post (GPT-1, BERT, original Transformer)
    norm_eps: float = 1e-5
    final_norm: bool = True       # a norm after the last block (pre-norm stacks need it)
    bias: bool = True             # biases in linear layers and norms
    positions: str = "learned"    # learned | sinusoidal | relative | rotary | none
    rope_theta: float = 10000.0   # rotary positions: the base of the frequencies (LLaMA 2: 1e4, SmolLM2: 1e5)
    position_offset: int = 0      # learned tables keep this many unused rows first (BART: 2)
    scale_embeddings: bool = False  # token embeddings times sqrt(d_model) (Vaswani et al. §3.4)
    embedding_norm: bool = False  # a norm on the summed embeddings (BERT, BART)
    scale_attention: bool = True  # divide scores by sqrt(d_head); T5 folds it into the init
    relative_buckets: int = 32
    relative_max_distance: int = 128
    tie_embeddings: bool = True
    lm_head_bias: bool = False    # a trained bias on the LM head's logits (CTRL)
    dropout: float = 0.1          # embeddings and residual branches
    attn_dropout: float = 0.1     # attention probabilities
    activation_dropout: float = 0.0  # inside the feed-forward, after the activation (T5, BART)
    init_std: float = 0.02
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    decoder_start_token_id: int | None = None  # encoder-decoders: the first decoder input
    label_smoothing: float = 0.0  # of every cross-entropy loss (the original Transformer: 0.1, §5.4)
    num_labels: int = 2           # classification heads
    label_names: list = field(default_factory=list)  # one name per label (saved as id2label); [] = LABEL_i
    classifier_dropout: float | None = None  # dropout before a classification head; None = `dropout`
    type_vocab_size: int = 0      # segment (token type) embeddings: BERT 2, 0 = none
    sinusoidal_layout: str = "interleaved"  # interleaved (the paper) | halves (all sines then cosines: Marian)
    final_logits_bias: bool = False  # a fixed bias added to the logits (BART, Marian)
    scale_decoder_outputs: bool | None = None  # T5: decoder output x d_model^-0.5 before the head; None = if tied
    extra: dict = field(default_factory=dict)  # settings of one family only (the RNN's), checked by that family

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ConfigError(f"unknown model family {self.family!r}; choose one of {', '.join(FAMILIES)}")
        if self.d_head == 0:
            if self.d_model % self.n_head:
                raise ConfigError(
                    f"d_model={self.d_model} is not divisible by n_head={self.n_head}; "
                    "change one of them or set d_head explicitly")
            self.d_head = self.d_model // self.n_head
        for name, allowed in (("norm", ("layernorm", "rmsnorm")),
                              ("norm_position", ("pre", "post")),
                              ("positions", ("learned", "sinusoidal", "relative", "rotary", "none")),
                              ("activation", ("relu", "gelu", "gelu_tanh", "silu", "gated-gelu", "gated-gelu_tanh",
                                              "gated-relu", "gated-silu"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.n_kv_head < 0 or (self.n_kv_head and self.n_head % self.n_kv_head):
            raise ConfigError(f"n_kv_head={self.n_kv_head} must divide n_head={self.n_head}: each key/value head "
                              "serves an equal group of query heads (0 means n_head)")
        if self.positions == "rotary" and self.d_head % 2:
            raise ConfigError(f"rotary positions rotate pairs of channels, but d_head={self.d_head} is odd")
        if self.rope_theta != 10000.0 and self.positions != "rotary":
            raise ConfigError(f"rope_theta={self.rope_theta} only applies to rotary positions, but "
                              f"positions={self.positions!r}; set positions='rotary' or leave rope_theta at 10000")
        if self.rope_theta <= 0:
            raise ConfigError(f"rope_theta={self.rope_theta} must be > 0")
        if self.sinusoidal_layout not in ("interleaved", "halves"):
            raise ConfigError(f"sinusoidal_layout={self.sinusoidal_layout!r} is not one of interleaved, halves")
        if self.position_offset and self.positions != "learned":
            raise ConfigError(f"position_offset={self.position_offset} only shifts a learned position table, but "
                              f"positions={self.positions!r}; set position_offset=0")
        if self.type_vocab_size < 0:
            raise ConfigError(f"type_vocab_size={self.type_vocab_size} must be >= 0 (0: no segment embeddings)")
        for name in ("dropout", "attn_dropout", "activation_dropout", "classifier_dropout"):
            p = getattr(self, name)
            if p is not None and not 0.0 <= p < 1.0:
                raise ConfigError(f"{name}={p} must be a probability in [0, 1)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing={self.label_smoothing} must be in [0, 1)")

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """As DictMixin.from_dict; configs saved before the typed fields kept them in `extra`: move them."""
        d = dict(d)
        extra = dict(d.get("extra") or {})
        for name in LEGACY_EXTRA:
            if name in extra:
                d.setdefault(name, extra.pop(name))
        d["extra"] = extra
        return super().from_dict(d)

    @property
    def kv_heads(self) -> int:
        """How many key/value heads attention has: n_kv_head, or n_head when it is 0."""
        return self.n_kv_head or self.n_head

    def replace(self, **changes) -> ModelConfig:
        """A copy with some fields changed. A head width that was derived from d_model / n_head is
        derived again when either changes (else d_model=128 on a 64-wide preset keeps 16-wide heads)."""
        if "d_head" not in changes and {"d_model", "n_head"} & changes.keys() \
                and self.d_head == self.d_model // self.n_head:
            changes["d_head"] = 0
        return dataclasses.replace(self, **changes)

    def save(self, path: str | Path) -> None:
        """Write the config as JSON, atomically."""
        atomic_write(path, json.dumps(self.to_dict(), indent=2) + "\n")
