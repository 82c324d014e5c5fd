"""BERT (Devlin et al. 2019): a stack of post-norm encoder blocks read in both directions,
and the heads that pretrain and fine-tune it.

    input = token embedding + position embedding + segment embedding       (§3, Figure 2)
    h     = EncoderBlock^L(LayerNorm(input))                              post-norm, GELU (§3)
    pooled = tanh(W h[CLS] + b)                                            the [CLS] summary

Pretraining (§3.1) predicts masked tokens (MLM head, decoder tied to the token embeddings) and
whether segment B follows segment A (NSP head on the pooled [CLS]). Fine-tuning (§4) puts one
linear layer on the pooled [CLS] (sequence classification, multiple choice), on every token
(token classification), or on every token twice (start / end of an answer span, extractive QA).
The input is the shared `Embeddings` (layers/embeddings.py) with segments and an embedding norm.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import ConfigError
from ..layers import Embeddings, EncoderBlock, Unpadded, build_attention_mask, make_norm
from ..layers.dropout import Dropout
from ..layers.feedforward import activation_fn
from .base import ANY, IGNORE_INDEX, Model, ModelOutput, supporting, token_loss


@dataclass
class BertOutput(ModelOutput):
    """`hidden_states` (B, T, C) holds every final state for the bare encoder and the per-token heads.
    The heads that read a few positions (sequence classification and multiple choice: [CLS]; MLM and
    pretraining given labels: the masked positions and [CLS]) skip the padding and compute only those
    positions in the last block (BertBody's `read`): their other states are zeros."""

    pooler_output: torch.Tensor | None = None            # (B, C): tanh(W h[CLS] + b)
    seq_relationship_logits: torch.Tensor | None = None  # (B, 2): NSP, 0 = "B follows A"
    start_logits: torch.Tensor | None = None             # (B, T): extractive QA
    end_logits: torch.Tensor | None = None


class BertBody(nn.Module):
    """Embeddings, encoder blocks and (optionally) the pooler: ids (B, T) -> states (B, T, C)."""

    def __init__(self, config: ModelConfig, pooler: bool = True):
        super().__init__()
        self.config = config
        self.embed = Embeddings(config, padding_idx=config.pad_token_id)
        self.encoder = nn.ModuleList(EncoderBlock(config, i) for i in range(config.n_layer))
        self.final_norm = make_norm(config) if config.final_norm else None
        self.pooler = nn.Linear(config.d_model, config.d_model) if pooler else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                need_weights: bool = False, read: torch.Tensor | None = None):
        """attention_mask: (B, T), 1 for real tokens, 0 for [PAD] (never attended to).

        read: (B, T) bool, the positions whose final states the caller reads (the pooler's position 0,
        the masked positions of MLM). Given, the blocks run on the real tokens only, packed (padding
        is skipped), the last block computes the positions read only, and the returned states are
        zeros elsewhere. None, or need_weights: every position is computed, padding included, as
        transformers does.
        """
        B, T = input_ids.shape
        if self.embed.max_position is not None and T > self.embed.max_position:
            raise ConfigError(f"{T} tokens do not fit the model's {self.config.max_position} positions; "
                              f"truncate the input to max_length={self.config.max_position}")
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device)[None]           # (1, T)
        x = self.embed(input_ids, position_ids, token_type_ids)                       # (B, T, C)
        # No padding anywhere: no mask at all, the fused kernel's fastest path.
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None
        mask, _ = build_attention_mask(T, T, key_padding=attention_mask, device=input_ids.device)
        unpadded = None
        if read is not None and not need_weights:
            real = attention_mask.bool() if attention_mask is not None else torch.ones_like(read)
            unpadded = Unpadded(real | read, real=real)
            x = unpadded.pack(x)                                                      # (N, C)
        attentions = []
        for i, block in enumerate(self.encoder):
            if unpadded is not None and i == len(self.encoder) - 1:
                unpadded = unpadded.only(read)   # the last block: outputs at the positions read only
            x, weights = block(x, attn_mask=mask, need_weights=need_weights, unpadded=unpadded)
            attentions.append(weights)
        if self.final_norm is not None:
            x = self.final_norm(x)
        if unpadded is not None:
            x = unpadded.unpack(x)                                                    # (B, T, C)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None  # (B, C)
        return x, pooled, (attentions if need_weights else None)


def first_position(input_ids: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (B, T) bool, True at position 0 only: what the pooler reads ([CLS])."""
    read = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device).flatten(0, -2)
    read[:, 0] = True
    return read


class BertPreTrainedModel(Model):
    """What every BERT model shares: N(0, 0.02) initialisation without GPT-2's depth scaling
    (BERT's own), and a body that is built with or without the pooler. Positions may be of any
    absolute kind; segments (type_vocab_size), a final norm and the classifier dropout are honoured."""

    family = "bert"
    residual_projections = ()
    supports = supporting(Model.supports, positions=("learned", "sinusoidal", "none"), type_vocab_size=ANY,
                          classifier_dropout=ANY)

    def _finish(self) -> None:
        self.init_weights()
        emb = self.bert.embed.tokens
        if emb.padding_idx is not None:
            with torch.no_grad():
                emb.weight[emb.padding_idx].zero_()

    def _tie_mlm_decoder(self) -> None:
        """The MLM decoder is the token table transposed (§3.1, as BERT's code), unless untied by config."""
        if self.config.tie_embeddings:
            self.mlm.decoder.weight = self.bert.embed.tokens.weight

    def _classifier_dropout(self) -> Dropout:
        c = self.config
        return Dropout(c.classifier_dropout if c.classifier_dropout is not None else c.dropout)



class BertModel(BertPreTrainedModel):
    """The bare encoder: hidden states (B, T, C) and the pooled [CLS] (B, C); `logits` is None.

    Sentence embeddings (Reimers & Gurevych 2019) are a pooling of its hidden states (`embed`).
    """

    task = "base"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.bert = BertBody(config, pooler=True)
        self._finish()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                need_weights: bool = False) -> BertOutput:
        x, pooled, attentions = self.bert(input_ids, attention_mask, token_type_ids, position_ids,
                                               need_weights)
        return BertOutput(logits=None, hidden_states=x, pooler_output=pooled, attentions=attentions)


class MaskedLMHead(nn.Module):
    """Predict the original token at every position (§3.1, Task #1): dense + GELU + LayerNorm,
    then the token embedding matrix transposed (tied) plus a per-token bias."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.transform = nn.Linear(config.d_model, config.d_model)
        self.act = activation_fn(config.activation)
        self.norm = make_norm(config)
        self.decoder = nn.Linear(config.d_model, config.vocab_size, bias=False)  # tied to the embeddings by default
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x):                                     # (B, T, C) -> (B, T, V)
        return self.decoder(self.norm(self.act(self.transform(x)))) + self.bias


class BertForMaskedLM(BertPreTrainedModel):
    """MLM only (no pooler, as transformers' BertForMaskedLM): fill-mask and MLM-only pretraining.

    With `labels`, `logits` holds the masked positions only, (P, V): the vocabulary projection
    then costs 15% of the full one. Without labels it is (B, T, V).
    """

    task = "masked-lm"
    head_modules = ("mlm.",)   # what a pretrained body lacks (load with fresh_head=True)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.bert = BertBody(config, pooler=False)
        self.mlm = MaskedLMHead(config)
        self._finish()
        self._tie_mlm_decoder()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, need_weights: bool = False) -> BertOutput:
        # Given labels, only the masked positions are read: the padding need not be computed.
        picked = labels != IGNORE_INDEX if labels is not None else None                     # (B, T)
        x, _, attentions = self.bert(input_ids, attention_mask, token_type_ids, position_ids, need_weights,
                                     read=picked)
        if labels is not None:   # only the masked positions need the vocabulary-sized projection
            logits = self.mlm(x[picked])                                             # (P, V)
            loss = token_loss(logits, labels[picked], self.config.label_smoothing) if picked.any() else logits.sum() * 0
            return BertOutput(logits=logits, loss=loss, hidden_states=x, attentions=attentions)
        return BertOutput(logits=self.mlm(x), hidden_states=x, attentions=attentions)


class BertForPreTraining(BertPreTrainedModel):
    """MLM + next sentence prediction (§3.1); the loss is their sum, as in the paper's code.
    `logits` are the MLM logits, (P, V) given labels as in BertForMaskedLM, else (B, T, V)."""

    task = "pretraining"
    head_modules = ("mlm.", "nsp.")   # what a pretrained body lacks (load with fresh_head=True)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.bert = BertBody(config, pooler=True)
        self.mlm = MaskedLMHead(config)
        self.nsp = nn.Linear(config.d_model, 2)
        self._finish()
        self._tie_mlm_decoder()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, next_sentence_label: torch.Tensor | None = None,
                need_weights: bool = False) -> BertOutput:
        # Given labels, only the masked positions and [CLS] are read: the padding need not be computed.
        picked = labels != IGNORE_INDEX if labels is not None else None                     # (B, T)
        x, pooled, attentions = self.bert(input_ids, attention_mask, token_type_ids, position_ids, need_weights,
                                          read=None if picked is None else picked | first_position(input_ids))
        nsp_logits = self.nsp(pooled)                                                # (B, 2)
        loss = None
        if labels is not None:
            logits = self.mlm(x[picked])                                             # (P, V)
            loss = token_loss(logits, labels[picked], self.config.label_smoothing) if picked.any() else logits.sum() * 0
        else:
            logits = self.mlm(x)                                                     # (B, T, V)
        if next_sentence_label is not None:
            nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_label,
                                       label_smoothing=self.config.label_smoothing)
            loss = nsp_loss if loss is None else loss + nsp_loss
        return BertOutput(logits=logits, loss=loss, hidden_states=x, pooler_output=pooled,
                          seq_relationship_logits=nsp_logits, attentions=attentions)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """Regression (MSE) when there is one output, else single-label cross-entropy (as transformers)."""
    if config.num_labels == 1:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return token_loss(logits, labels, config.label_smoothing)


class BertForSequenceClassification(BertPreTrainedModel):
    """One linear layer on the pooled [CLS] (§4.1, Figure 4a/b); num_labels = 1 is regression."""

    task = "sequence-classification"
    head_modules = ("classifier.",)   # what a pretrained body lacks (load with fresh_head=True)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.bert = BertBody(config, pooler=True)
        self.dropout = self._classifier_dropout()
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self._finish()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, need_weights: bool = False) -> BertOutput:
        # Only the pooled [CLS] is read: padding is skipped, and the last block computes [CLS] only.
        x, pooled, attentions = self.bert(input_ids, attention_mask, token_type_ids, position_ids,
                                          need_weights, read=first_position(input_ids))
        logits = self.classifier(self.dropout(pooled))                               # (B, num_labels)
        loss = classification_loss(logits, labels, self.config) if labels is not None else None
        return BertOutput(logits=logits, loss=loss, hidden_states=x, pooler_output=pooled, attentions=attentions)


class BertForTokenClassification(BertPreTrainedModel):
    """One linear layer on every token's state (§4.3, Figure 4d: NER); labels IGNORE_INDEX (-100) are ignored
    (sub-word pieces after a word's first, special tokens, padding)."""

    task = "token-classification"
    head_modules = ("classifier.",)   # what a pretrained body lacks (load with fresh_head=True)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.bert = BertBody(config, pooler=False)
        self.dropout = self._classifier_dropout()
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self._finish()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, need_weights: bool = False) -> BertOutput:
        x, _, attentions = self.bert(input_ids, attention_mask, token_type_ids, position_ids, need_weights)
        logits = self.classifier(self.dropout(x))                                    # (B, T, num_labels)
        loss = classification_loss(logits, labels, self.config) if labels is not None else None
        return BertOutput(logits=logits, loss=loss, hidden_states=x, attentions=attentions)


class BertForQuestionAnswering(BertPreTrainedModel):
    """Extractive QA (§4.2, Figure 4c): a start and an end score for every token; the answer is
    the best valid span (`best_span`). The loss is the mean of the start and end cross-entropies."""

    task = "question-answering"
    head_modules = ("qa_outputs.",)   # what a pretrained body lacks (load with fresh_head=True)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.bert = BertBody(config, pooler=False)
        self.qa_outputs = nn.Linear(config.d_model, 2)
        self._finish()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                start_positions: torch.Tensor | None = None, end_positions: torch.Tensor | None = None,
                need_weights: bool = False) -> BertOutput:
        x, _, attentions = self.bert(input_ids, attention_mask, token_type_ids, position_ids, need_weights)
        logits = self.qa_outputs(x)                                                  # (B, T, 2)
        start_logits, end_logits = logits.unbind(-1)                                 # (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            T = input_ids.shape[1]   # positions outside the sequence are ignored, as transformers clamps them
            start = start_positions.clamp(0, T)
            end = end_positions.clamp(0, T)
            smoothing = self.config.label_smoothing
            loss = (F.cross_entropy(start_logits.float(), start, ignore_index=T, label_smoothing=smoothing)
                    + F.cross_entropy(end_logits.float(), end, ignore_index=T, label_smoothing=smoothing)) / 2
        return BertOutput(logits=logits, loss=loss, hidden_states=x, start_logits=start_logits,
                          end_logits=end_logits, attentions=attentions)


def best_span(start_logits: torch.Tensor, end_logits: torch.Tensor, allowed: torch.Tensor | None = None,
              max_answer_length: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """The span (start, end) with the highest start + end score such that start <= end <
    start + max_answer_length and both ends are `allowed` (B, T) (e.g. context tokens only).

    start_logits, end_logits: (B, T). Returns two (B,) index tensors.
    """
    B, T = start_logits.shape
    scores = start_logits[:, :, None] + end_logits[:, None, :]                       # (B, Ts, Te)
    i = torch.arange(T, device=scores.device)
    valid = (i[None, :] >= i[:, None]) & (i[None, :] < i[:, None] + max_answer_length)  # (Ts, Te)
    valid = valid[None].expand(B, T, T)
    if allowed is not None:
        allowed = allowed.bool()
        valid = valid & allowed[:, :, None] & allowed[:, None, :]
    scores = scores.masked_fill(~valid, float("-inf"))
    flat = scores.flatten(1).argmax(-1)                                              # (B,)
    return flat // T, flat % T


class BertForMultipleChoice(BertPreTrainedModel):
    """One score per choice from the pooled [CLS] of "[CLS] context [SEP] choice [SEP]" (§4.4, SWAG);
    a softmax over the choices. Inputs are (B, num_choices, T)."""

    task = "multiple-choice"
    head_modules = ("classifier.",)   # what a pretrained body lacks (load with fresh_head=True)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.bert = BertBody(config, pooler=True)
        self.dropout = self._classifier_dropout()
        self.classifier = nn.Linear(config.d_model, 1)
        self._finish()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, need_weights: bool = False) -> BertOutput:
        B, N, T = input_ids.shape

        def flat(t):
            return None if t is None else t.reshape(B * N, -1)

        x, pooled, attentions = self.bert(flat(input_ids), flat(attention_mask), flat(token_type_ids),
                                          flat(position_ids), need_weights, read=first_position(input_ids))
        logits = self.classifier(self.dropout(pooled)).view(B, N)                    # (B, num_choices)
        loss = token_loss(logits, labels, self.config.label_smoothing) if labels is not None else None
        return BertOutput(logits=logits, loss=loss, hidden_states=x, pooler_output=pooled, attentions=attentions)


MODELS = (BertModel, BertForMaskedLM, BertForPreTraining, BertForSequenceClassification, BertForTokenClassification,
          BertForQuestionAnswering, BertForMultipleChoice)


# --- presets ---------------------------------------------------------------------------------------

def bert_config(d_model: int, n_layer: int, n_head: int, **kw) -> ModelConfig:
    """BERT (Devlin et al. 2019, §3): post-norm encoder, exact GELU, LayerNorm eps 1e-12, 512 positions,
    2 segments, the 30,522-token uncased WordPiece vocabulary, [PAD] = 0."""
    return ModelConfig(family="bert", vocab_size=30522, d_model=d_model, n_layer=n_layer, n_head=n_head,
                       d_ff=4 * d_model, max_position=512, activation="gelu", norm_position="post",
                       norm_eps=1e-12, final_norm=False, pad_token_id=0, type_vocab_size=2,
                       embedding_norm=True, **kw)


PRESETS = {
    "bert-base": lambda: bert_config(768, 12, 12),
    "bert-large": lambda: bert_config(1024, 24, 16),
    # all-MiniLM-L6-v2's shape (the minilm-l6 asset): 384 wide, 6 layers, 12 heads of 32.
    "minilm-l6": lambda: bert_config(384, 6, 12),
    "bert-tiny": lambda: bert_config(64, 2, 4).replace(max_position=128),
}
