"""Sequence to sequence with attention: a recurrent (GRU or LSTM) encoder-decoder.

Bahdanau, Cho & Bengio 2015, "Neural Machine Translation by Jointly Learning to Align and Translate":
a bidirectional encoder, additive attention computed from the previous decoder state, the context
fed into the decoder RNN. Luong, Pham & Manning 2015, "Effective Approaches to Attention-based Neural
Machine Translation": multiplicative scores (dot, general), attention computed after the RNN step,
and an attentional hidden state that feeds the softmax. The family the Transformer replaced.

Family settings live in `config.extra` (checked by `RNNSettings.from_config`):
    cell             "gru" | "lstm"                                   (default "gru")
    bidirectional    bool: a bidirectional encoder                     (default True)
    attention        "bahdanau" | "luong-dot" | "luong-general"        (default "bahdanau")
    teacher_forcing  ratio r in [0, 1]: the chance, per row and step, that training feeds the
                     gold token rather than the model's own argmax (default 1.0)
    embedding_dim    width E of both token embeddings                  (default d_model)
Shared fields: d_model is the RNNs' hidden size H (per direction in the encoder), n_layer their
depth (n_decoder_layer must be 0 or equal), dropout on embeddings, between RNN layers and before the
output layer, init_std, tie_embeddings (output layer = target embedding, when the widths agree).
The first decoder input is config.decoder_start_token_id, else extra["decoder_start_token_id"],
else bos_token_id. Fields of the Transformer blocks (n_head, d_ff, norms, positions, activation, ...) must
keep their "none" or default values: `Seq2SeqRNN.supports` refuses any other.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..config import ModelConfig
from ..errors import ConfigError, DataError
from .base import ANY, IGNORE_INDEX, DecodeState, Model, ModelOutput, supporting, token_loss

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}
ATTENTIONS = ("bahdanau", "luong-dot", "luong-general")
# ModelConfig fields of the Transformer blocks, which this family has none of: refused unless at their default.
UNUSED_FIELDS = ("activation", "norm", "norm_position", "norm_eps", "final_norm", "bias", "scale_attention",
                 "relative_buckets", "relative_max_distance")
EXTRA_KEYS = ("cell", "bidirectional", "attention", "teacher_forcing", "embedding_dim", "decoder_start_token_id")


@dataclass
class RNNSettings:
    """The family's settings from `config.extra`, checked."""
    cell: str = "gru"
    bidirectional: bool = True
    attention: str = "bahdanau"
    teacher_forcing: float = 1.0
    embedding_dim: int = 0

    @classmethod
    def from_config(cls, config: ModelConfig) -> RNNSettings:
        extra = dict(config.extra)
        where = "config.extra of a seq2seq_rnn model"
        unknown = set(extra) - set(EXTRA_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known keys are {', '.join(EXTRA_KEYS)}")
        s = cls(cell=extra.get("cell", "gru"), bidirectional=extra.get("bidirectional", True),
                attention=extra.get("attention", "bahdanau"), teacher_forcing=extra.get("teacher_forcing", 1.0),
                embedding_dim=extra.get("embedding_dim", config.d_model))
        if s.cell not in CELLS:
            raise ConfigError(f"{where}: cell={s.cell!r} is not one of {', '.join(CELLS)}")
        if s.attention not in ATTENTIONS:
            raise ConfigError(f"{where}: attention={s.attention!r} is not one of {', '.join(ATTENTIONS)}")
        if not isinstance(s.bidirectional, bool):
            raise ConfigError(f"{where}: bidirectional={s.bidirectional!r} must be true or false")
        if isinstance(s.teacher_forcing, bool) or not isinstance(s.teacher_forcing, (int, float)) \
                or not 0.0 <= s.teacher_forcing <= 1.0:
            raise ConfigError(f"{where}: teacher_forcing={s.teacher_forcing!r} must be a ratio between 0 and 1 "
                              "(1.0: always feed the gold token)")
        if isinstance(s.embedding_dim, bool) or not isinstance(s.embedding_dim, int) or s.embedding_dim < 1:
            raise ConfigError(f"{where}: embedding_dim={s.embedding_dim!r} must be a positive integer")
        if config.n_decoder_layer not in (0, config.n_layer):
            raise ConfigError(f"seq2seq_rnn: n_decoder_layer={config.n_decoder_layer} must equal n_layer="
                              f"{config.n_layer} (or be 0): each decoder layer starts from the encoder layer's "
                              "final state")
        if config.n_layer < 1 or config.d_model < 1:
            raise ConfigError(f"seq2seq_rnn: n_layer={config.n_layer} and d_model={config.d_model} must be >= 1")
        return s


def run_rnn(rnn: nn.RNNBase, x: torch.Tensor, mask: torch.Tensor | None):
    """Run `rnn` over x (B, S, E) so that padding changes nothing: in each row the real tokens (mask
    True) move to the front in order, are packed by length, and the outputs move back to their
    positions (zeros at padding). Left, right or any padding works. Returns (outputs, final state)."""
    if mask is None:
        return rnn(x)
    B, S, _ = x.shape
    lengths = mask.sum(1)                                                          # (B,)
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)             # (B, S) real first
    x = x.gather(1, order[..., None].expand_as(x))
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, final = rnn(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=S)            # (B, S, D)
    return torch.zeros_like(out).scatter(1, order[..., None].expand_as(out), out), final


class RNNEncoder(nn.Module):
    """Bahdanau et al. 2015, §3.2: annotations h_j = [->h_j ; <-h_j], the forward and backward states
    of a bidirectional RNN over the embedded source (or ->h_j alone, unidirectional)."""

    def __init__(self, config: ModelConfig, s: RNNSettings):
        super().__init__()
        self.embed = nn.Embedding(config.vocab_size, s.embedding_dim)
        self.drop = nn.Dropout(config.dropout)
        self.rnn = CELLS[s.cell](s.embedding_dim, config.d_model, num_layers=config.n_layer, batch_first=True,
                                 bidirectional=s.bidirectional, dropout=config.dropout if config.n_layer > 1 else 0.0)
        self.n_dir = 2 if s.bidirectional else 1

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None):
        """-> annotations (B, S, n_dir*H), final (L, B, n_dir*H) and, for an LSTM, final cells (L, B, n_dir*H)."""
        out, final = run_rnn(self.rnn, self.drop(self.embed(input_ids)), mask)           # (B, S, n_dir*H)
        finals = final if isinstance(final, tuple) else (final,)

        def by_layer(h):  # (L*n_dir, B, H) -> (L, B, n_dir*H): each layer's directions side by side
            L2, B, H = h.shape
            return h.view(L2 // self.n_dir, self.n_dir, B, H).permute(0, 2, 1, 3).reshape(L2 // self.n_dir, B, -1)
        finals = [by_layer(h) for h in finals]
        return out, finals[0], (finals[1] if len(finals) > 1 else None)


class RNNAttention(nn.Module):
    """a_tj = softmax_j(score(q_t, h_j)) over the real source positions; c_t = sum_j a_tj h_j.
    Subclasses give the score; `precompute` turns the annotations into keys once per source."""

    def precompute(self, memory: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def scores(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, query, keys, memory, memory_mask: torch.Tensor | None = None):
        """query (B, T, Hq), keys (B, S, K), memory (B, S, D), memory_mask (B, S) True = real
        -> context (B, T, D), weights (B, T, S)."""
        scores = self.scores(query, keys)                                          # (B, T, S)
        if memory_mask is not None:
            scores = scores.masked_fill(~memory_mask[:, None, :], float("-inf"))
        weights = scores.softmax(-1)
        return weights @ memory, weights


class AdditiveAttention(RNNAttention):
    """Bahdanau et al. 2015, eq. (6) and appendix A.1.2: e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j).
    U_a h_j (with the bias) does not depend on the step: `precompute` does it once per source."""

    def __init__(self, query_dim: int, memory_dim: int, attention_dim: int):
        super().__init__()
        self.query = nn.Linear(query_dim, attention_dim, bias=False)              # W_a
        self.key = nn.Linear(memory_dim, attention_dim)                          # U_a
        self.v = nn.Linear(attention_dim, 1, bias=False)                         # v_a

    def precompute(self, memory):
        return self.key(memory)                                                    # (B, S, A)

    def scores(self, query, keys):
        return self.v(torch.tanh(self.query(query)[:, :, None] + keys[:, None])).squeeze(-1)  # (B, T, S)


class MultiplicativeAttention(RNNAttention):
    """Luong et al. 2015, eq. (8): score(h_t, h_s) = h_t^T h_s (dot) or h_t^T W_a h_s (general).
    W_a h_s does not depend on the step: `precompute` does it once per source."""

    def __init__(self, query_dim: int, memory_dim: int, general: bool):
        super().__init__()
        self.key = nn.Linear(memory_dim, query_dim, bias=False) if general else None   # W_a

    def precompute(self, memory):
        return memory if self.key is None else self.key(memory)                   # (B, S, H)

    def scores(self, query, keys):
        return query @ keys.transpose(1, 2)                                        # (B, T, S)


class BahdanauDecoder(nn.Module):
    """Bahdanau et al. 2015, eq. (4)-(6) and appendix A.2.2: the context c_i comes from the previous
    state s_{i-1}; s_i = f(s_{i-1}, [E y_{i-1}; c_i]); the output t_i = tanh(U_o s_i + V_o E y_{i-1} +
    C_o c_i) (tanh in place of the paper's maxout) goes to the softmax layer. With several layers, the
    attention reads the top layer's state. Step by step only: c_i needs s_{i-1}."""

    def __init__(self, config: ModelConfig, s: RNNSettings, memory_dim: int):
        super().__init__()
        H, E = config.d_model, s.embedding_dim
        self.attention = AdditiveAttention(H, memory_dim, H)
        self.rnn = CELLS[s.cell](E + memory_dim, H, num_layers=config.n_layer, batch_first=True,
                                 dropout=config.dropout if config.n_layer > 1 else 0.0)
        self.out = nn.Linear(H + E + memory_dim, E)                               # [U_o V_o C_o]
        self.out_dim = E

    def step(self, emb, state, memory, keys, memory_mask):
        """emb (B, 1, E), state (L, B, H) or an LSTM's (h, c) -> output (B, 1, E), state, weights (B, 1, S)."""
        h = state[0] if isinstance(state, tuple) else state
        context, weights = self.attention(h[-1][:, None], keys, memory, memory_mask)   # (B, 1, D)
        s, state = self.rnn(torch.cat([emb, context], -1), state)                  # (B, 1, H)
        return torch.tanh(self.out(torch.cat([s, emb, context], -1))), state, weights


class LuongDecoder(nn.Module):
    """Luong et al. 2015, eq. (5) and §3: h_t = RNN(h_{t-1}, E y_{t-1}); attention from h_t gives c_t;
    the attentional hidden state h~_t = tanh(W_c [c_t; h_t]) goes to the softmax layer. Without input
    feeding (§3.3), so with teacher forcing the RNN runs over the whole target in one call (`run`)."""

    def __init__(self, config: ModelConfig, s: RNNSettings, memory_dim: int):
        super().__init__()
        H, E = config.d_model, s.embedding_dim
        self.attention = MultiplicativeAttention(H, memory_dim, general=s.attention == "luong-general")
        self.rnn = CELLS[s.cell](E, H, num_layers=config.n_layer, batch_first=True,
                                 dropout=config.dropout if config.n_layer > 1 else 0.0)
        self.out = nn.Linear(memory_dim + H, H, bias=False)                       # W_c
        self.out_dim = H

    def run(self, emb, state, memory, keys, memory_mask):
        """emb (B, T, E) -> outputs h~ (B, T, H), state, weights (B, T, S); `step` is run with T = 1."""
        h, state = self.rnn(emb, state)                                            # (B, T, H)
        context, weights = self.attention(h, keys, memory, memory_mask)           # (B, T, D)
        return torch.tanh(self.out(torch.cat([context, h], -1))), state, weights

    step = run


class Seq2SeqRNN(Model):
    """Encoder, attention, decoder and a softmax layer over the target vocabulary.

    The decoder's initial state (per layer): s_0 = tanh(W_init [->h_last; <-h_first]), the encoder's
    final states of both directions (Bahdanau et al. 2015, A.2.2 uses <-h_1 alone); for an LSTM the
    cell likewise, c_0 = W_cell [->c_last; <-c_first] (no tanh: a cell is not bounded).
    For Luong's dot score the annotations must be as wide as the decoder: a bidirectional encoder's
    are then projected, h_j <- W_m h_j (2H -> H); the other scores read them as they are.

    Which path runs in `forward`: in eval mode, or in training with teacher_forcing = 1, the gold
    decoder inputs are fed; Luong's decoder then runs the RNN over the whole target at once, while
    Bahdanau's loops over the steps (its RNN input needs the context from the previous state). In
    training with teacher_forcing r < 1 both loop, and at each step each row is fed the gold token
    with probability r, else the argmax of the model's previous prediction (no gradient through it;
    Bengio et al. 2015's scheduled sampling with a fixed ratio; `self.teacher_forcing` may be changed).
    """

    family = "seq2seq_rnn"
    task = "seq2seq"
    is_encoder_decoder = True
    can_generate = True
    # No Transformer embeddings or blocks: their fields must keep the values that mean "none" (the preset's)
    # or their defaults; `extra` is RNNSettings'. max_position bounds nothing here.
    supports = supporting(Model.supports, extra=ANY, n_decoder_layer=ANY, decoder_start_token_id=ANY,
                          positions=("none",), scale_embeddings=(False,), embedding_norm=(False,), n_head=(1,),
                          d_ff=(0,), attn_dropout=(0.0,), activation_dropout=(0.0,),
                          **{name: (ModelConfig.__dataclass_fields__[name].default,) for name in UNUSED_FIELDS})

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        s = RNNSettings.from_config(config)
        self.settings = s
        self.teacher_forcing = float(s.teacher_forcing)
        H, E, n_dir = config.d_model, s.embedding_dim, 2 if s.bidirectional else 1
        self.encoder = RNNEncoder(config, s)
        project = s.attention == "luong-dot" and s.bidirectional
        self.memory_proj = nn.Linear(n_dir * H, H, bias=False) if project else None  # W_m
        memory_dim = H if project else n_dir * H
        self.bridge = nn.Linear(n_dir * H, H)                                      # W_init
        self.bridge_cell = nn.Linear(n_dir * H, H) if s.cell == "lstm" else None   # W_cell
        decoder = BahdanauDecoder if s.attention == "bahdanau" else LuongDecoder
        self.decoder = decoder(config, s, memory_dim)
        self.target_embed = nn.Embedding(config.vocab_size, E)                     # target tokens
        self.drop = nn.Dropout(config.dropout)
        self.lm_head = nn.Linear(self.decoder.out_dim, config.vocab_size)          # W_o
        self.init_weights()
        if config.tie_embeddings:
            if self.decoder.out_dim != E:
                raise ConfigError(f"seq2seq_rnn: tie_embeddings needs the output layer's input "
                                  f"({self.decoder.out_dim}, d_model for Luong attention) as wide as embedding_dim "
                                  f"({E}); make them equal or set tie_embeddings=False")
            self.lm_head.weight = self.target_embed.weight

    def init_weights(self) -> None:
        """As Bahdanau et al. 2015, appendix B.1: recurrent matrices random orthogonal (each gate's block),
        other weights N(0, init_std^2) (the paper: 0.01; the presets: 0.05), biases zero; an LSTM's
        forget-gate bias 1 (Jozefowicz et al. 2015)."""
        for name, p in self.named_parameters():
            if "weight_hh" in name:
                for block in p.data.chunk(p.shape[0] // p.shape[1]):
                    nn.init.orthogonal_(block)
            elif p.dim() >= 2:
                nn.init.normal_(p, mean=0.0, std=self.config.init_std)
            else:
                nn.init.zeros_(p)
                if self.settings.cell == "lstm" and "bias_ih" in name:
                    H = p.shape[0] // 4
                    nn.init.ones_(p.data[H:2 * H])                                 # gates i, f, g, o

    @property
    def decoder_start_token_id(self) -> int:
        c = self.config
        start = c.decoder_start_token_id if c.decoder_start_token_id is not None else \
            c.extra.get("decoder_start_token_id", c.bos_token_id)
        if start is None:
            raise ConfigError("seq2seq_rnn: no first decoder token; set decoder_start_token_id (or bos_token_id) "
                              "in the config")
        return start

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Source (B, S) -> (memory (B, S, D), memory_mask (B, S) bool or None, keys, initial decoder state).
        attention_mask None means no padding (it is not guessed from pad_token_id)."""
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = attention_mask.bool()
            empty = (~mask.any(1)).nonzero().flatten().tolist()
            if empty:
                raise DataError(f"seq2seq_rnn: source rows {empty[:5]} have no real token (attention_mask all 0); "
                                "give every row at least one token")
        memory, final, final_cell = self.encoder(input_ids, mask)                  # (B, S, n_dir*H)
        if self.memory_proj is not None:
            memory = self.memory_proj(memory)                                      # (B, S, H)
        hidden = torch.tanh(self.bridge(final))                                    # (L, B, H)
        state = (hidden, self.bridge_cell(final_cell)) if final_cell is not None else hidden
        return memory, mask, self.decoder.attention.precompute(memory), state

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """Decoder inputs from labels: the start token, then labels[:-1]; -100 becomes padding."""
        start = self.decoder_start_token_id
        shifted = torch.cat([torch.full_like(labels[:, :1], start), labels[:, :-1]], dim=1)
        pad = self.config.pad_token_id if self.config.pad_token_id is not None else start
        return shifted.masked_fill(shifted == IGNORE_INDEX, pad)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                need_weights: bool = False) -> ModelOutput:
        """Logits (B, T, V) for the target; given labels (B, T), aligned with decoder_input_ids (no
        shift; -100 ignored), the cross-entropy loss. attentions: [{"cross": (B, 1, T, S)}] when asked."""
        if decoder_input_ids is None:
            if labels is None:
                raise DataError("seq2seq_rnn: give decoder_input_ids or labels (the target)")
            decoder_input_ids = self.shift_right(labels)
        memory, mask, keys, state = self.encode(input_ids, attention_mask)
        B, T = decoder_input_ids.shape
        sampling = self.training and self.teacher_forcing < 1.0
        if isinstance(self.decoder, LuongDecoder) and not sampling:
            emb = self.drop(self.target_embed(decoder_input_ids))                   # (B, T, E)
            out, _, weights = self.decoder.run(emb, state, memory, keys, mask)     # (B, T, H)
            logits = self.lm_head(self.drop(out))                                  # (B, T, V)
        else:
            outs, all_weights, all_logits = [], [], []
            for t in range(T):
                token = decoder_input_ids[:, t]
                if sampling and t > 0:
                    gold = torch.rand(B, device=token.device) < self.teacher_forcing
                    token = torch.where(gold, token, all_logits[-1][:, 0].argmax(-1))
                out_t, state, weights_t = self.decoder.step(self.drop(self.target_embed(token[:, None])), state,
                                                            memory, keys, mask)    # (B, 1, O)
                outs.append(out_t)
                all_weights.append(weights_t)
                if sampling:
                    all_logits.append(self.lm_head(self.drop(out_t)))
            out, weights = torch.cat(outs, 1), torch.cat(all_weights, 1)           # (B, T, O), (B, T, S)
            logits = torch.cat(all_logits, 1) if sampling else self.lm_head(self.drop(out))
        loss = None
        if labels is not None:
            loss = token_loss(logits, labels, self.config.label_smoothing)
        return ModelOutput(logits=logits, loss=loss, hidden_states=out,
                           attentions=[{"cross": weights[:, None]}] if need_weights else None,
                           encoder_hidden_states=memory)

    # The per-step function of the one decoding loop in generation.py.
    def decode_init(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, max_new_tokens: int):
        """Run the encoder once; the decoder starts from its start token. Returns (state, (B, 1) start).
        The RNN state is kept batch-first in `recurrent` ("hidden", an LSTM's "cell": (B, L, H)) so that
        beam search reorders it; the precomputed attention keys (B, S, K) are `memory_keys`."""
        memory, mask, keys, rnn_state = self.encode(input_ids, attention_mask)
        state = DecodeState(cache=None, memory=memory, memory_mask=mask, memory_keys=keys)
        self._keep_rnn_state(state, rnn_state)
        start = torch.full((input_ids.shape[0], 1), self.decoder_start_token_id, dtype=torch.long,
                           device=input_ids.device)
        return state, start

    @staticmethod
    def _keep_rnn_state(state: DecodeState, rnn_state) -> None:
        """The RNN's (L, B, H) state, or an LSTM's (hidden, cell), into `state.recurrent`, batch-first."""
        hidden, cell = rnn_state if isinstance(rnn_state, tuple) else (rnn_state, None)
        state.recurrent["hidden"] = hidden.transpose(0, 1)
        if cell is not None:
            state.recurrent["cell"] = cell.transpose(0, 1)

    def decode_step(self, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        """Feed decoder tokens (B, t) one after another; return the next-token logits (B, V)."""
        kept = state.recurrent
        hidden = kept["hidden"].transpose(0, 1).contiguous()                       # (L, B, H)
        rnn_state = (hidden, kept["cell"].transpose(0, 1).contiguous()) if "cell" in kept else hidden
        for t in range(tokens.shape[1]):
            out, rnn_state, _ = self.decoder.step(self.drop(self.target_embed(tokens[:, t:t + 1])), rnn_state,
                                                  state.memory, state.memory_keys, state.memory_mask)
        self._keep_rnn_state(state, rnn_state)
        return self.lm_head(out[:, -1])                                            # (B, V)


# --- presets ---------------------------------------------------------------------------------------

def rnn_config(d_model: int, n_layer: int, embedding_dim: int, cell: str = "gru", attention: str = "bahdanau",
               bidirectional: bool = True, vocab_size: int = 8000, **kw) -> ModelConfig:
    """Seq2seq RNN with attention (Bahdanau et al. 2015; Luong et al. 2015): d_model is the RNNs' hidden
    size (per encoder direction), the family's own settings sit in `extra` (RNNSettings above).
    No Transformer blocks: n_head, d_ff and positions are unused. [PAD] 0, [BOS] 1 (the decoder's start
    token), [EOS] 2; input and output embeddings untied, as in the papers. Weights N(0, 0.05^2), about the spread
    of Luong et al.'s U(-0.1, 0.1) (Bahdanau's N(0, 0.01^2) suits 1000-wide layers and learns slowly at these)."""
    return ModelConfig(family="seq2seq_rnn", vocab_size=vocab_size, d_model=d_model, n_layer=n_layer,
                       n_decoder_layer=n_layer, n_head=1, d_ff=0, positions="none", tie_embeddings=False,
                       dropout=0.1, attn_dropout=0.0, init_std=0.05, pad_token_id=0, bos_token_id=1,
                       eos_token_id=2, decoder_start_token_id=1,
                       extra={"cell": cell, "bidirectional": bidirectional, "attention": attention,
                              "teacher_forcing": 1.0, "embedding_dim": embedding_dim}, **kw)


PRESETS = {
    # A small Bahdanau-style GRU translator (about 8.3M parameters with an 8,000-token vocabulary).
    "rnn-attention": lambda: rnn_config(256, 1, 256),
    "rnn-tiny": lambda: rnn_config(32, 1, 16, vocab_size=128).replace(init_std=0.1),
}
