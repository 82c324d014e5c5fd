"""`ModelConfig`: one dataclass that describes every model of the family, and named presets.

The shared blocks in `layers/` read only this config: pre- or post-norm, LayerNorm or
RMSNorm, the activation, biases, the kind of positions and the attention scaling are
all fields here, so a model file only adds what is really its own.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

FAMILIES = ("gpt", "bert", "transformer", "t5", "bart", "seq2seq_rnn")


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
    d_head: int = 0               # 0 means d_model // n_head
    d_ff: int = 3072
    max_position: int = 1024      # context length (learned/sinusoidal tables)
    activation: str = "gelu_tanh"  # relu | gelu | gelu_tanh | silu | gated-gelu | gated-gelu_tanh | gated-relu
    norm: str = "layernorm"       # layernorm | rmsnorm
    norm_position: str = "pre"    # pre (GPT-2, T5) | post (GPT-1, BERT, original Transformer)
    norm_eps: float = 1e-5
    final_norm: bool = True       # a norm after the last block (pre-norm stacks need it)
    bias: bool = True             # biases in linear layers and norms
    positions: str = "learned"    # learned | sinusoidal | relative | none
    position_offset: int = 0      # learned tables keep this many unused rows first (BART: 2)
    scale_embeddings: bool = False  # token embeddings times sqrt(d_model) (Vaswani et al. §3.4)
    embedding_norm: bool = False  # a norm on the summed embeddings (BERT, BART)
    scale_attention: bool = True  # divide scores by sqrt(d_head); T5 folds it into the init
    relative_buckets: int = 32
    relative_max_distance: int = 128
    tie_embeddings: bool = True
    dropout: float = 0.1          # embeddings and residual branches
    attn_dropout: float = 0.1     # attention probabilities
    activation_dropout: float = 0.0  # inside the feed-forward, after the activation (T5, BART)
    init_std: float = 0.02
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    decoder_start_token_id: int | None = None  # encoder-decoders: the first decoder input
    label_smoothing: float = 0.0  # of the LM loss (the original Transformer: 0.1, §5.4)
    num_labels: int = 2           # classification heads
    label_names: list = field(default_factory=list)  # one name per label (saved as id2label); [] = LABEL_i
    extra: dict = field(default_factory=dict)  # family-specific settings with no shared meaning

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
                              ("positions", ("learned", "sinusoidal", "relative", "none")),
                              ("activation", ("relu", "gelu", "gelu_tanh", "silu", "gated-gelu", "gated-gelu_tanh", "gated-relu"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")

    def replace(self, **changes) -> "ModelConfig":
        """A copy with some fields changed. A head width that was derived from d_model / n_head is
        derived again when either changes (else d_model=128 on a 64-wide preset keeps 16-wide heads)."""
        if "d_head" not in changes and {"d_model", "n_head"} & changes.keys() \
                and self.d_head == self.d_model // self.n_head:
            changes["d_head"] = 0
        return dataclasses.replace(self, **changes)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _gpt2(d_model, n_layer, n_head, **kw) -> ModelConfig:
    """GPT-2 (Radford et al. 2019): pre-norm, final LayerNorm, GELU (tanh), 1024 context."""
    return ModelConfig(family="gpt", vocab_size=50257, d_model=d_model, n_layer=n_layer, n_head=n_head,
                       d_ff=4 * d_model, max_position=1024, activation="gelu_tanh", norm_position="pre",
                       final_norm=True, bos_token_id=50256, eos_token_id=50256, **kw)


def _gpt3(d_model, n_layer, n_head, d_head=0) -> ModelConfig:
    """GPT-3 paper sizes (Brown et al. 2020, Table 2.1): GPT-2 blocks, 2048 context (dense attention).

    The table's n_head x d_head does not always equal d_model (1.3B: 24 x 128 vs 2048), while its
    parameter counts assume d_model-wide attention; we keep n_head * d_head = d_model (1.3B: 16 x 128;
    13B: 40 x 128 = 5120 for d_model 5140, as close as integers allow).
    """
    return _gpt2(d_model, n_layer, n_head, d_head=d_head).replace(max_position=2048)


PRESETS: dict[str, callable] = {
    # GPT-1 (Radford et al. 2018): post-norm, no final norm, GELU (tanh form, as its code and
    # transformers' openai-gpt), 512 context, 40,478 BPE vocab.
    "gpt1": lambda: ModelConfig(family="gpt", vocab_size=40478, d_model=768, n_layer=12, n_head=12, d_ff=3072,
                                max_position=512, activation="gelu_tanh", norm_position="post", final_norm=False),
    "gpt2": lambda: _gpt2(768, 12, 12),
    "gpt2-medium": lambda: _gpt2(1024, 24, 16),
    "gpt2-large": lambda: _gpt2(1280, 36, 20),
    "gpt2-xl": lambda: _gpt2(1600, 48, 25),
    "gpt3-125m": lambda: _gpt3(768, 12, 12),
    "gpt3-350m": lambda: _gpt3(1024, 24, 16),
    "gpt3-760m": lambda: _gpt3(1536, 24, 16),
    "gpt3-1.3b": lambda: _gpt3(2048, 24, 16),
    "gpt3-2.7b": lambda: _gpt3(2560, 32, 32),
    "gpt3-6.7b": lambda: _gpt3(4096, 32, 32),
    "gpt3-13b": lambda: _gpt3(5140, 40, 40, d_head=128),
    "gpt3-175b": lambda: _gpt3(12288, 96, 96),
    # Tiny shapes for tests and the CPU demo.
    "gpt2-tiny": lambda: _gpt2(64, 2, 4).replace(max_position=128),
    "gpt1-tiny": lambda: ModelConfig(family="gpt", vocab_size=40478, d_model=64, n_layer=2, n_head=4, d_ff=256,
                                     max_position=128, activation="gelu_tanh", norm_position="post", final_norm=False),
}


def _bert(d_model, n_layer, n_head, **kw) -> ModelConfig:
    """BERT (Devlin et al. 2019, §3): post-norm encoder, exact GELU, LayerNorm eps 1e-12, 512 positions,
    2 segments, the 30,522-token uncased WordPiece vocabulary, [PAD] = 0."""
    return ModelConfig(family="bert", vocab_size=30522, d_model=d_model, n_layer=n_layer, n_head=n_head,
                       d_ff=4 * d_model, max_position=512, activation="gelu", norm_position="post",
                       norm_eps=1e-12, final_norm=False, pad_token_id=0, extra={"type_vocab_size": 2}, **kw)


PRESETS.update({
    "bert-base": lambda: _bert(768, 12, 12),
    "bert-large": lambda: _bert(1024, 24, 16),
    # all-MiniLM-L6-v2's shape (the minilm-l6 asset): 384 wide, 6 layers, 12 heads of 32.
    "minilm-l6": lambda: _bert(384, 6, 12),
    "bert-tiny": lambda: _bert(64, 2, 4).replace(max_position=128),
})


def _rnn(d_model, n_layer, embedding_dim, cell="gru", attention="bahdanau", bidirectional=True,
         vocab_size=8000, **kw) -> ModelConfig:
    """Seq2seq RNN with attention (Bahdanau et al. 2015; Luong et al. 2015): d_model is the RNNs' hidden
    size (per encoder direction), the rest of the family's settings sit in `extra` (models/seq2seq_rnn.py).
    No Transformer blocks: n_head, d_ff and positions are unused. [PAD] 0, [BOS] 1 (the decoder's start
    token), [EOS] 2; input and output embeddings untied, as in the papers. Weights N(0, 0.05^2), about the spread
    of Luong et al.'s U(-0.1, 0.1) (Bahdanau's N(0, 0.01^2) suits 1000-wide layers and learns slowly at these)."""
    return ModelConfig(family="seq2seq_rnn", vocab_size=vocab_size, d_model=d_model, n_layer=n_layer,
                       n_decoder_layer=n_layer, n_head=1, d_ff=0, positions="none", tie_embeddings=False,
                       dropout=0.1, attn_dropout=0.0, init_std=0.05, pad_token_id=0, bos_token_id=1,
                       eos_token_id=2, decoder_start_token_id=1,
                       extra={"cell": cell, "bidirectional": bidirectional, "attention": attention,
                              "teacher_forcing": 1.0, "embedding_dim": embedding_dim}, **kw)


PRESETS.update({
    # A small Bahdanau-style GRU translator (about 8.3M parameters with an 8,000-token vocabulary).
    "rnn-attention": lambda: _rnn(256, 1, 256),
    "rnn-tiny": lambda: _rnn(32, 1, 16, vocab_size=128).replace(init_std=0.1),
})


def get_preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None


def register_preset(name: str, make: callable) -> None:
    """Let a model family (or a user) add presets without editing this file."""
    PRESETS[name] = make
