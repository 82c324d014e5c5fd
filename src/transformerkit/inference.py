"""Using a trained encoder: sentence embeddings, similarity, fill-mask, and predictions of the
fine-tuned heads. What `tkit embed`, `tkit fill-mask` and `tkit finetune`'s evaluation call."""
from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .errors import ConfigError, DataError

POOLINGS = ("mean", "cls")


def encoder_states(model, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
    """The last hidden states (B, T, C) of an encoder model, whatever head it carries."""
    if model.family != "bert":
        raise ConfigError(f"{type(model).__name__} is not an encoder with a body to embed with; "
                          "use a BERT-family model (e.g. the minilm-l6 asset)")
    return model.bert(input_ids, attention_mask, token_type_ids)[0]


def pool(states: torch.Tensor, attention_mask: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """(B, T, C) -> (B, C): the mean over real tokens (Reimers & Gurevych 2019), or the [CLS] state."""
    if pooling == "cls":
        return states[:, 0]
    if pooling == "mean":
        weights = attention_mask.to(states.dtype)[:, :, None]                      # (B, T, 1)
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    raise ConfigError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")


@torch.no_grad()
def embed(model, tokenizer, texts: Sequence[str], pooling: str = "mean", normalize: bool = True,
          batch_size: int = 32, max_length: int | None = None) -> torch.Tensor:
    """Sentence embeddings (N, C): pool each text's last hidden states; L2-normalise them so that
    a dot product is the cosine similarity. Texts longer than max_length (default: the model's
    positions) are truncated. An empty text is embedded as [CLS] [SEP] alone, as sentence-transformers
    and transformers do, so a corpus with a blank line embeds whole."""
    if isinstance(texts, str):
        texts = [texts]
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
    max_length = max_length or model.config.max_position
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer.batch_encode(texts[start:start + batch_size], max_length=max_length, allow_empty=True)
            enc = {k: v.to(device) for k, v in enc.items()}
            states = encoder_states(model, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
            vectors = pool(states.float(), enc["attention_mask"], pooling)
            out.append(F.normalize(vectors, dim=-1) if normalize else vectors)
    finally:
        model.train(was_training)
    if not out:
        raise DataError("embed() got no texts; pass at least one sentence")
    return torch.cat(out)


def similarity(model, tokenizer, first: Sequence[str], second: Sequence[str], pooling: str = "mean",
               **kwargs) -> torch.Tensor:
    """Cosine similarity (N,) of each sentence pair (first[i], second[i])."""
    if len(first) != len(second):
        raise DataError(f"similarity() needs pairs: got {len(first)} first and {len(second)} second sentences")
    a = embed(model, tokenizer, first, pooling=pooling, normalize=True, **kwargs)
    b = embed(model, tokenizer, second, pooling=pooling, normalize=True, **kwargs)
    return (a * b).sum(-1)


@torch.no_grad()
def fill_mask(model, tokenizer, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """For each [MASK] in `text`, the top_k tokens a masked-LM head predicts, with probabilities."""
    mask_id = tokenizer.mask_token_id
    if mask_id is None:
        raise ConfigError("this tokenizer has no mask token; fill-mask needs a BERT-style vocabulary with [MASK]")
    if model.task not in ("masked-lm", "pretraining"):
        raise ConfigError(f"{type(model).__name__} has no masked-LM head; load a checkpoint saved with one "
                          "(BertForMaskedLM or BertForPreTraining, e.g. from `tkit pretrain bert`)")
    enc = tokenizer.batch_encode([text], max_length=model.config.max_position)
    where = (enc["input_ids"][0] == mask_id).nonzero().flatten()
    if len(where) == 0:
        raise DataError(f"no {tokenizer.mask_token} in {text!r}; put one where a word should be predicted")
    model.eval()
    device = next(model.parameters()).device
    enc = {k: v.to(device) for k, v in enc.items()}
    logits = model(**enc).logits[0, where.to(device)]                                 # (M, V)
    probs = logits.float().softmax(-1)
    top = probs.topk(top_k, dim=-1)
    return [[(tokenizer.decode([i]).strip(), p) for i, p in zip(ids.tolist(), ps.tolist())]
            for ids, ps in zip(top.indices, top.values)]


@torch.no_grad()
def fill_in(model, tokenizer, text: str, max_new_tokens: int = 64, num_beams: int = 1) -> str:
    """Fill the masked spans of `text` with a denoising encoder-decoder, returning the whole text.

    T5 (span corruption): `text` holds sentinels <extra_id_0>, <extra_id_1>, ...; the decoder writes
    each sentinel followed by its span, and each sentinel in `text` is replaced by its span.
    BART (text infilling): `text` holds <mask> tokens, each standing for a span of any length (also
    none); the decoder writes the whole text again, which is returned.
    """
    from .generation import generate

    if not model.is_encoder_decoder or model.config.family not in ("t5", "bart"):
        raise ConfigError(f"{type(model).__name__} is not a denoising encoder-decoder; fill-in needs T5 or BART")
    marker = "<extra_id_0>" if model.config.family == "t5" else "<mask>"
    if marker not in text:
        raise DataError(f"no {marker} in {text!r}; put one where a span should be filled in")
    # Encode the text between the markers on its own: the markers stand where whole words were cut out,
    # so no word-boundary piece may sit next to them (as none did in training).
    ids = []
    for piece in re.split(r"(<extra_id_\d+>|<mask>)", text):
        marker_id = tokenizer.backend.token_to_id(piece) if piece.startswith("<") else None
        ids += [marker_id] if marker_id is not None else tokenizer.encode(piece.strip(), add_special_tokens=False)
    ids.append(tokenizer.eos_token_id)
    if model.config.family == "bart" and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id] + ids                      # BART's rows are <s> text </s>
        # BART writes the whole text again: room for the text and what its masks hide.
        max_new_tokens = min(max_new_tokens, len(ids) + 8)
    model.eval()
    device = next(model.parameters()).device
    out = generate(model, torch.tensor([ids], device=device), max_new_tokens=max_new_tokens, num_beams=num_beams,
                   eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)[0, 1:].tolist()
    if model.config.family == "bart":
        return " ".join(tokenizer.decode(out, skip_special_tokens=True).split())
    # T5: "<extra_id_0> span 0 <extra_id_1> span 1 ... </s>" -> put span i where sentinel i is.
    written = tokenizer.decode(out, skip_special_tokens=False)
    filled = text
    for i in range(text.count("<extra_id_")):
        start, end = f"<extra_id_{i}>", f"<extra_id_{i + 1}>"
        span = written.split(start, 1)[1] if start in written else ""
        span = span.split(end, 1)[0].split(tokenizer.eos_token or "</s>", 1)[0].strip()
        filled = filled.replace(start, span, 1)
    return " ".join(filled.split())
