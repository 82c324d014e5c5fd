"""BERT (`bert`) checkpoints of Hugging Face `transformers`: BertModel and its heads.

Their attention keeps query, key and value as three Linear layers; ours is one fused `qkv`
(one matmul instead of three), so the converter stacks and splits them along the output dim.
Their MLM decoder weight is the word embedding (tied) and its bias `cls.predictions.bias`.
"""
from __future__ import annotations

from ..config import ModelConfig
from ..errors import CheckpointError
from .hf import Converter, labels_from_hf, labels_to_hf, register

# Our task -> their architecture name.
ARCHITECTURES = {
    "base": "BertModel",
    "masked-lm": "BertForMaskedLM",
    "pretraining": "BertForPreTraining",
    "sequence-classification": "BertForSequenceClassification",
    "token-classification": "BertForTokenClassification",
    "question-answering": "BertForQuestionAnswering",
    "multiple-choice": "BertForMultipleChoice",
}
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}

_LAYER = r"bert\.encoder\.(\d+)\."
_THEIR_LAYER = r"bert.encoder.layer.\1."
RENAME = [
    (r"bert\.embed\.tokens\.weight", "bert.embeddings.word_embeddings.weight"),
    (r"bert\.embed\.positions\.weight", "bert.embeddings.position_embeddings.weight"),
    (r"bert\.embed\.segments\.weight", "bert.embeddings.token_type_embeddings.weight"),
    (r"bert\.embed\.norm\.(weight|bias)", r"bert.embeddings.LayerNorm.\1"),
    (_LAYER + r"self_attn\.qkv\.(weight|bias)", tuple(_THEIR_LAYER + f"attention.self.{p}.\\2"
                                                       for p in ("query", "key", "value"))),
    (_LAYER + r"self_attn\.out\.(weight|bias)", _THEIR_LAYER + r"attention.output.dense.\2"),
    (_LAYER + r"self_attn_norm\.(weight|bias)", _THEIR_LAYER + r"attention.output.LayerNorm.\2"),
    (_LAYER + r"ffn\.w_1\.(weight|bias)", _THEIR_LAYER + r"intermediate.dense.\2"),
    (_LAYER + r"ffn\.w_2\.(weight|bias)", _THEIR_LAYER + r"output.dense.\2"),
    (_LAYER + r"ffn_norm\.(weight|bias)", _THEIR_LAYER + r"output.LayerNorm.\2"),
    (r"bert\.pooler\.(weight|bias)", r"bert.pooler.dense.\1"),
    (r"mlm\.transform\.(weight|bias)", r"cls.predictions.transform.dense.\1"),
    (r"mlm\.norm\.(weight|bias)", r"cls.predictions.transform.LayerNorm.\1"),
    (r"mlm\.decoder\.weight", "cls.predictions.decoder.weight"),
    (r"mlm\.bias", "cls.predictions.bias"),
    (r"nsp\.(weight|bias)", r"cls.seq_relationship.\1"),
    (r"(classifier|qa_outputs)\.(weight|bias)", r"\1.\2"),
]


def bert_config_from_hf(hf: dict) -> tuple[ModelConfig, str]:
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"BERT position_embedding_type {hf['position_embedding_type']!r} is not supported; "
                              "only 'absolute' (learned positions) is")
    act = hf.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise CheckpointError(f"BERT hidden_act {act!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
    config = ModelConfig(
        family="bert", vocab_size=hf.get("vocab_size", 30522), d_model=hf.get("hidden_size", 768),
        n_layer=hf.get("num_hidden_layers", 12), n_head=hf.get("num_attention_heads", 12),
        d_ff=hf.get("intermediate_size", 3072), max_position=hf.get("max_position_embeddings", 512),
        activation=ACTIVATIONS[act], norm_position="post", final_norm=False,
        norm_eps=hf.get("layer_norm_eps", 1e-12), dropout=hf.get("hidden_dropout_prob", 0.1),
        attn_dropout=hf.get("attention_probs_dropout_prob", 0.1), init_std=hf.get("initializer_range", 0.02),
        pad_token_id=hf.get("pad_token_id", 0), tie_embeddings=hf.get("tie_word_embeddings", True),
        type_vocab_size=hf.get("type_vocab_size", 2), classifier_dropout=hf.get("classifier_dropout"),
        embedding_norm=True, **labels_from_hf(hf))
    arch = (hf.get("architectures") or ["BertModel"])[0]
    task = next((t for t, a in ARCHITECTURES.items() if a == arch), None)
    if task is None:
        raise CheckpointError(f"architecture {arch!r} is not supported; supported: {', '.join(ARCHITECTURES.values())}")
    return config, task


def bert_config_to_hf(c: ModelConfig, task: str) -> dict:
    if c.n_head * c.d_head != c.d_model:
        raise CheckpointError(f"BERT checkpoints need n_head * d_head == d_model, but this model has "
                              f"{c.n_head} x {c.d_head} != {c.d_model}")
    hf = {"model_type": "bert", "architectures": [ARCHITECTURES[task]], "vocab_size": c.vocab_size,
          "hidden_size": c.d_model, "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head,
          "intermediate_size": c.d_ff, "hidden_act": {v: k for k, v in ACTIVATIONS.items()}[c.activation],
          "max_position_embeddings": c.max_position, "type_vocab_size": c.type_vocab_size,
          "layer_norm_eps": c.norm_eps, "hidden_dropout_prob": c.dropout,
          "attention_probs_dropout_prob": c.attn_dropout, "initializer_range": c.init_std,
          "pad_token_id": c.pad_token_id, "position_embedding_type": "absolute",
          "tie_word_embeddings": c.tie_embeddings, "classifier_dropout": c.classifier_dropout,
          **labels_to_hf(c)}
    if task == "sequence-classification":
        hf["problem_type"] = "regression" if c.num_labels == 1 else "single_label_classification"
    return hf


def _writable(c: ModelConfig) -> bool:
    """A BERT that transformers' BertModel computes the same way: post-norm LayerNorm with biases, learned
    positions, segments, the embedding norm and no final norm, scaled attention of d_model width, an
    activation it names. Any other BERT (sinusoidal positions, RMSNorm, ...) is saved in our format."""
    return (c.norm == "layernorm" and c.norm_position == "post" and c.bias and c.positions == "learned"
            and c.position_offset == 0 and c.type_vocab_size > 0 and c.embedding_norm and not c.final_norm
            and not c.scale_embeddings and c.scale_attention and c.n_head * c.d_head == c.d_model
            and c.activation in ACTIVATIONS.values())


register(Converter(family="bert", model_types=("bert",), config_from_hf=bert_config_from_hf,
                   config_to_hf=bert_config_to_hf, rename=RENAME, body_prefix="bert.", accepts=_writable,
                   base_task="base", ignored=(r"cls\.predictions\.decoder\.bias",)))
