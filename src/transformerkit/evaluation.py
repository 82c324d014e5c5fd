"""Scoring text with a causal language model: perplexity of a long text, and the log-likelihood of
continuations given contexts (what zero-/few-shot multiple-choice evaluation ranks answers by).

Both follow the conventions of EleutherAI's lm-evaluation-harness (`HFLM`), so their numbers can be
set beside published ones:

- Text is encoded without special tokens (`add_special_tokens=False`), and the first token of a text
  (or a continuation after an empty context) is conditioned on the *prefix token*: the tokenizer's BOS
  token, else its EOS token (the harness's `prefix_token_id`; GPT-2's is `<|endoftext|>`). So every
  token of the text is scored, the first included.
- `loglikelihood` moves trailing whitespace of a context to the start of its continuation and takes
  the continuation's tokens as the tail of the encoding of context + continuation (`_encode_pair`).
- `perplexity` reports per token, per word (as the GPT-2 paper does for PTB, Radford et al. 2019,
  §3.1: the log-probability of the dataset divided by its number of canonical units) and per UTF-8
  byte in bits (the harness's `bits_per_byte`).

Log-probabilities are computed in fp32 from the model's logits whatever dtype the model runs in, and
summed in fp64. Windows and requests are independent, so they run `batch_size` at a time, right-padded
with an attention mask (a causal LM's real positions never see the padding after them, and keep the
positions 0, 1, ... they would have alone).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .errors import ConfigError, DataError
from .progress import bar


def perplexity(model, tokenizer, text: str, max_length: int | None = None, stride: int | None = None,
               batch_size: int = 8) -> dict:
    """Perplexity of `text` under a causal LM, by strided sliding windows.

    Returns {tokens, nll, perplexity, word_perplexity, bits_per_byte}:
        tokens           the number of tokens scored
        nll              their summed negative log-likelihood, in nats
        perplexity       exp(nll / tokens)
        word_perplexity  exp(nll / words), words = len(text.split()): the runs of non-whitespace
                         characters (Python's str.split() with no argument: spaces, tabs and newlines all
                         separate words, punctuation does not, and a line end is not itself a word)
        bits_per_byte    nll / ln 2 / len(text.encode("utf-8"))

    The text is tokenized once, without special tokens. If the tokenizer has a BOS token (else an EOS
    token), it is put in front, as lm-evaluation-harness's rolling log-likelihood does, so every token
    of the text is scored, the first included; with neither, the first token is context only.

    Windows (the standard strided evaluation, Hugging Face's "perplexity of fixed-length models"): the
    model reads `max_length` tokens at a time (default: its context, `model.decoder_context`), and a
    window starts every `stride` tokens (default: max_length). Window i reads the tokens
    [begin, end), begin = i * stride, and predicts the tokens [begin + 1, end + 1); of these it scores
    only those no earlier window scored, with every token before them in the window as context. So
    every token is scored exactly once, each with all the left context its window holds, and a token
    t in a later window sees at least max_length - stride + 1 tokens before it. stride == max_length
    gives disjoint windows (lm-evaluation-harness's `loglikelihood_rolling`, where each window's first
    prediction is conditioned on the last token of the window before); a smaller stride costs
    max_length / stride times the compute for more context per token. A forward holds the logits of
    `batch_size` windows, (batch_size, max_length, vocab) floats: GPT-2 at 1024 tokens, 1.6 GB in fp32 at
    the default 8; lower batch_size where memory is short (the result does not change).
    """
    _need_causal_lm(model, "perplexity")
    context = model.decoder_context
    if max_length is None:
        if context is None:
            raise ConfigError(f"{type(model).__name__} has no fixed context; pass max_length (tokens per window)")
        max_length = context
    if not isinstance(max_length, int) or max_length < 2:
        raise ConfigError(f"max_length must be an integer of at least 2 tokens per window, got {max_length!r}")
    if context is not None and max_length > context:
        raise ConfigError(f"max_length {max_length} exceeds the model's context of {context} tokens; "
                          f"use max_length <= {context} (or leave it unset)")
    stride = max_length if stride is None else stride
    if not isinstance(stride, int) or not 1 <= stride <= max_length:
        raise ConfigError(f"stride must be an integer from 1 to max_length ({max_length}), got {stride!r}; "
                          "windows further apart than their length would leave tokens unscored")
    _need_batch_size(batch_size)
    if not isinstance(text, str) or not text.split():
        raise DataError("perplexity() got an empty text (no words); pass the text to score")

    prefix = _prefix_token(tokenizer)
    ids = ([] if prefix is None else [prefix]) + tokenizer.encode(text, add_special_tokens=False)
    if len(ids) < 2:
        raise DataError(f"the text {text!r} is one token and the tokenizer has no BOS or EOS token to condition it "
                        "on: nothing to score; pass a longer text")
    n = len(ids)
    # Each window: (begin, end, first scored input position): reads ids[begin:end], scores the
    # predictions of ids[first + 1 : end + 1].
    windows, prev_end, begin = [], 0, 0
    while prev_end < n - 1:
        end = min(begin + max_length, n - 1)
        windows.append((begin, end, prev_end))
        prev_end, begin = end, begin + stride

    sequence = torch.tensor(ids)
    nll, scored = 0.0, 0
    with _scoring(model) as device, bar(total=len(windows), desc="perplexity",
                                        enabled=len(windows) > batch_size) as progress:
        for start in range(0, len(windows), batch_size):
            chunk = windows[start:start + batch_size]
            rows = [sequence[b:e] for b, e, _ in chunk]
            logits = _forward_padded(model, rows, device)                              # (B, T, V)
            for row, (b, e, first) in enumerate(chunk):
                targets = sequence[first + 1:e + 1].to(device)                         # (S,)
                logprobs, _ = _score(logits[row, first - b:e - b], targets)
                nll -= logprobs
                scored += len(targets)
            progress.update(len(chunk))

    words = len(text.split())
    return {"tokens": scored, "nll": nll, "perplexity": math.exp(nll / scored),
            "word_perplexity": math.exp(nll / words),
            "bits_per_byte": nll / math.log(2) / len(text.encode("utf-8"))}


def loglikelihood(model, tokenizer, requests: Sequence[tuple[str, str]],
                  batch_size: int = 8) -> list[tuple[float, bool]]:
    """For each (context, continuation): log P(continuation | context), summed over the continuation's
    tokens in nats, and whether the continuation is the greedy one (each of its tokens the argmax).

    lm-evaluation-harness's `HFLM.loglikelihood`, convention for convention:
    - the token boundary (`_encode_pair`): whitespace at the end of the context moves to the start of
      the continuation (context.rstrip()); context + continuation is encoded whole and the context
      alone, and the continuation's tokens are the whole encoding's tail beyond the context's length.
      So "The sky is " + "blue" scores the token " blue", as the text would be tokenized.
    - an empty context: the continuation, encoded alone, is conditioned on the BOS token (else EOS).
    - too long for the model's context: the context is cut on the left (the model reads the last
      `model.decoder_context` tokens before the continuation's last); the continuation is kept whole,
      and one longer than the context is an error.
    Requests run `batch_size` at a time, longest first (the harness's order: a batch that does not fit
    in memory fails at once), and come back in the order given.
    """
    _need_causal_lm(model, "loglikelihood")
    _need_batch_size(batch_size)
    if isinstance(requests, tuple) and len(requests) == 2 and all(isinstance(r, str) for r in requests):
        raise DataError("loglikelihood() takes a list of (context, continuation) pairs; wrap a single pair in a list")
    limit = model.decoder_context
    prefix = _prefix_token(tokenizer)
    encoded = []       # (tokens the model reads, continuation tokens)
    for i, request in enumerate(requests):
        if not (isinstance(request, (tuple, list)) and len(request) == 2 and all(isinstance(r, str) for r in request)):
            raise DataError(f"request {i} is {request!r}, not a (context, continuation) pair of strings")
        context_ids, continuation_ids = _encode_pair(tokenizer, *request, prefix, i)
        if limit is not None and len(continuation_ids) > limit:
            raise DataError(f"request {i}: the continuation is {len(continuation_ids)} tokens, more than the model's "
                            f"context of {limit}; shorten it (the context is cut on the left, never the continuation)")
        whole = context_ids + continuation_ids
        if limit is not None:
            whole = whole[-(limit + 1):]                     # the model reads whole[:-1]: at most `limit` tokens
        encoded.append((whole[:-1], continuation_ids))

    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    results: list[tuple[float, bool] | None] = [None] * len(encoded)
    with _scoring(model) as device, bar(total=len(order), desc="loglikelihood",
                                        enabled=len(order) > batch_size) as progress:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            logits = _forward_padded(model, [torch.tensor(encoded[i][0]) for i in chunk], device)   # (B, T, V)
            for row, i in enumerate(chunk):
                inputs, continuation = encoded[i]
                # The logits at the last len(continuation) inputs predict the continuation's tokens.
                end = len(inputs)
                targets = torch.tensor(continuation, device=device)                    # (S,)
                results[i] = _score(logits[row, end - len(continuation):end], targets)
            progress.update(len(chunk))
    return results


def _encode_pair(tokenizer, context: str, continuation: str, prefix: int | None,
                 index: int) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) by lm-evaluation-harness's rules (see `loglikelihood`)."""
    if context == "":
        if prefix is None:
            raise DataError(f"request {index} has an empty context, and the tokenizer has no BOS or EOS token to "
                            "condition the continuation on; give a context")
        context_ids, continuation_ids = [prefix], tokenizer.encode(continuation, add_special_tokens=False)
    else:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = tokenizer.encode(context + continuation, add_special_tokens=False)
        context_ids = tokenizer.encode(context, add_special_tokens=False)
        continuation_ids = whole[len(context_ids):]
        if not context_ids:          # a context of whitespace only: it moved to the continuation
            if prefix is None:
                raise DataError(f"request {index} has a context of whitespace only, and the tokenizer has no BOS "
                                "or EOS token to condition the continuation on; give a context")
            context_ids = [prefix]
    if not continuation_ids:
        raise DataError(f"request {index}: the continuation {continuation!r} gives no tokens to score; "
                        "pass a non-empty continuation")
    return context_ids, continuation_ids


def _need_causal_lm(model, what: str) -> None:
    if model.is_encoder_decoder or not model.can_generate:
        kind = "an encoder-decoder" if model.is_encoder_decoder else f"a {model.task} model"
        raise ConfigError(f"{what} needs a causal (decoder-only) language model, and {type(model).__name__} is "
                          f"{kind}; load a GPT-style or LLaMA-style LM")


def _need_batch_size(batch_size) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")


def _prefix_token(tokenizer) -> int | None:
    """The token the first token of a text is conditioned on: BOS, else EOS (lm-evaluation-harness's
    `prefix_token_id`); None when the tokenizer has neither."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


class _scoring:
    """Eval mode and inference mode for the duration; gives the model's device, restores training mode."""

    def __init__(self, model):
        self.model = model

    def __enter__(self) -> torch.device:
        self.was_training = self.model.training
        self.model.eval()
        self.inference = torch.inference_mode()
        self.inference.__enter__()
        return next(self.model.parameters()).device

    def __exit__(self, *exc):
        self.inference.__exit__(*exc)
        self.model.train(self.was_training)


def _forward_padded(model, rows: Sequence[torch.Tensor], device) -> torch.Tensor:
    """Logits (B, T, V) of token rows of any lengths, right-padded to the longest with an attention mask."""
    width = max(len(r) for r in rows)
    input_ids = torch.zeros(len(rows), width, dtype=torch.long)                        # (B, T)
    mask = torch.zeros(len(rows), width, dtype=torch.long)                             # (B, T)
    for i, r in enumerate(rows):
        input_ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    padded = not bool(mask.all())
    out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device) if padded else None)
    return out.logits


def _score(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, bool]:
    """Summed log-probability of `targets` (S,) under next-token logits (S, V); whether each target is the argmax."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)                               # (S, V)
    picked = logprobs.gather(-1, targets[:, None]).squeeze(-1)                         # (S,)
    greedy = bool((logprobs.argmax(-1) == targets).all())
    return picked.double().sum().item(), greedy
