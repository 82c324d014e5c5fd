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

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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


def choice_loglikelihoods(model, tokenizer, context: str, continuations: Sequence[str],
                          batch_size: int = 8) -> list[tuple[float, bool]]:
    """`loglikelihood` of several continuations of one context, reading the context once: it goes through the
    model into a KV cache (the decoder's `decode_init` / `decode_step`), and each continuation is scored on
    top of it, the cache rewound in between. A multiple-choice item with 5 choices costs one context, not 5.
    Same token boundary as `loglikelihood` (whose results these equal up to float rounding); a context too
    long for the model is scored by `loglikelihood` itself (cut on the left)."""
    _need_causal_lm(model, "choice_loglikelihoods")
    prefix = _prefix_token(tokenizer)
    pairs = [_encode_pair(tokenizer, context, c, prefix, i) for i, c in enumerate(continuations)]
    context_ids = pairs[0][0]
    longest = max(len(c) for _, c in pairs)
    limit = model.decoder_context
    if any(ctx != context_ids for ctx, _ in pairs) or (limit is not None and len(context_ids) + longest - 1 > limit):
        return loglikelihood(model, tokenizer, [(context, c) for c in continuations], batch_size=batch_size)
    with _scoring(model) as device:
        ids = torch.tensor([context_ids], device=device)                                # (1, T)
        state, _ = model.decode_init(ids, None, max_new_tokens=longest)
        first = model.decode_step(state, ids)                                           # (1, V): the first token
        results = []
        for _, continuation in pairs:
            state.cache.rewind(len(context_ids))
            rows = [first] + [model.decode_step(state, torch.tensor([[t]], device=device)) for t in continuation[:-1]]
            results.append(_score(torch.cat(rows), torch.tensor(continuation, device=device)))
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


# ----------------------------------------------------------------------------- in-context learning
#
# Multiple-choice tasks scored by log-likelihood, few-shot, as lm-evaluation-harness scores them:
#
# - A prompt is: the task's description, a blank line, k solved examples ("shots"), each followed by a
#   blank line, then the question. An example is rendered by the task's format (bbc-news:
#   "Article: {text}\nTopic:") and, for a shot, followed by " " + its gold choice (the harness's
#   `target_delimiter` " " and `fewshot_delimiter` "\n\n").
# - Each choice is scored as the continuation " " + choice of the prompt (`loglikelihood`);
#   `accuracy` takes the argmax of the summed log-probabilities, `acc_norm` the argmax of the
#   log-probability divided by the choice's length in characters, len(choice) of the choice text
#   without the delimiter: the harness's `completion_len = len(choice)` (ConfigurableTask.
#   process_results, lm_eval/api/task.py; Leo Gao's note "Multiple Choice Normalization in LM
#   Evaluation", 2021, calls it byte-length normalization, but the code counts Python characters).
#   Ties go to the first choice (numpy argmax).
# - Shots come from the task's train split, drawn afresh for every item by one seeded generator
#   (numpy.random.default_rng(seed)) advancing over the items in order, without replacement within
#   an item; where the shot pool holds the item asked (a JSONL task: one pool), that item is left out
#   of its own draw. This is the harness's ContextSampler (one random.Random(fewshot_seed), `sample`
#   per document, the document itself removed when the few-shot split is the evaluated one). So item i
#   gets the same shots whatever `limit` is.
# - When a prompt and its longest choice do not fit the model's context, the last shots are dropped
#   (the first j drawn kept) until they do; the result reports the shots used. (The harness cuts the
#   context on the left instead, which can cut a shot or the description in half.)
# - chat=True: the whole prompt (description, shots, question) is one user message, rendered by the
#   tokenizer's chat template with the assistant's turn opened; each choice is scored as the start of
#   the assistant's reply, without the leading space.

ICL_TASKS = ("bbc-news", "tweets-sentiment")
_DEFAULT_MAX_WORDS = {"bbc-news": 120}    # 120 words ~ 160 SmolLM2 tokens; 9 articles ~ 1,500 of its 8,192
_CATALOG = {
    "bbc-news": ("Classify each news article by its topic: {labels}.", "Article: {text}\nTopic:"),
    "tweets-sentiment": ("Classify the sentiment of each tweet: {labels}.", "Tweet: {text}\nSentiment:"),
}
_USER_FORMAT = "Question: {text}\nAnswer:"


@dataclass(frozen=True)
class ICLItem:
    """One multiple-choice question: its text, the choices (without the leading space), the gold index,
    and where it comes from (for messages: "test item 3", "questions.jsonl, line 7")."""

    text: str
    choices: tuple[str, ...]
    gold: int
    source: str


@dataclass
class ICLTask:
    """A multiple-choice task: a description line, a prompt format with a {text} field, the shot pool
    (`train`) and the items asked (`test`). `one_pool`: train and test are the same list (a JSONL task),
    so an item is never among its own shots."""

    name: str
    description: str
    format: str
    train: list[ICLItem]
    test: list[ICLItem]
    one_pool: bool = False
    split: str = "test"

    def render(self, item: ICLItem) -> str:
        return self.format.format(text=item.text)


@dataclass
class ICLPrompt:
    """The prompt of one item as scored: the context, the continuations (one per choice), the gold index,
    the shots used (their indices into the task's train list, in prompt order), how many were asked for,
    and the tokens the model reads for the item's longest choice."""

    item: ICLItem
    context: str
    continuations: list[str]
    gold: int
    shots: list[int]
    shots_requested: int
    tokens: int


def load_icl_task(task: str | os.PathLike, split: str = "test", max_words: int | None = None) -> ICLTask:
    """A task by name (`ICL_TASKS`: the catalog data sets with their fixed splits, seed 0) or a .jsonl
    file of {"question", "choices", "answer"} lines (answer: an index or the choice's text), with an
    optional first line {"instruction": "..."}: the task's description. Texts have their whitespace
    collapsed to single spaces and, with `max_words`, are cut to their first max_words words (bbc-news:
    120 by default). A JSONL task has one pool: every line is asked, and the others are its shots;
    `split` does not apply to it."""
    if max_words is not None and (not isinstance(max_words, int) or isinstance(max_words, bool) or max_words < 1):
        raise ConfigError(f"max_words must be a positive integer (or None: whole texts), got {max_words!r}")
    spec = str(task)
    if spec in ICL_TASKS:
        from .data.labelled import SPLIT_NAMES, load_labelled

        if split not in SPLIT_NAMES:
            raise ConfigError(f"task {spec!r} has no split {split!r}; its splits: {', '.join(SPLIT_NAMES)}")
        words = _DEFAULT_MAX_WORDS.get(spec) if max_words is None else max_words
        data = load_labelled(spec)
        choices = tuple(data.labels)
        description, template = _CATALOG[spec]

        def items(name: str) -> list[ICLItem]:
            return [ICLItem(_clip(text, words), choices, label, f"{name} item {i}")
                    for i, (text, label) in enumerate(data.splits[name])]

        train = items("train")
        test = train if split == "train" else items(split)
        return ICLTask(spec, description.format(labels=_or_list(choices)), template, train, test,
                       one_pool=split == "train", split=split)
    if spec.lower().endswith(".jsonl"):
        path = Path(spec)
        if not path.is_file():
            raise DataError(f"task file {spec} does not exist; pass an existing .jsonl file of "
                            '{"question", "choices", "answer"} lines')
        description, items = _read_jsonl_task(path, max_words)
        return ICLTask(path.name, description, _USER_FORMAT, items, items, one_pool=True, split="all")
    raise ConfigError(f"unknown task {spec!r}; known tasks: {', '.join(ICL_TASKS)}, or the path of a .jsonl "
                      'file of {"question", "choices", "answer"} lines')


def _read_jsonl_task(path: Path, max_words: int | None) -> tuple[str, list[ICLItem]]:
    from .data.labelled import read_nonempty

    description, items = "", []
    for line, text in enumerate(read_nonempty(path).splitlines(), 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {line}: not valid JSON ({e.msg}); each line must be one JSON object "
                            '{"question", "choices", "answer"}') from None
        if not isinstance(row, dict):
            raise DataError(f'{path}, line {line}: a JSON {type(row).__name__}, not an object with "question", '
                            '"choices" and "answer"')
        if not items and not description and set(row) == {"instruction"}:
            if not isinstance(row["instruction"], str) or not row["instruction"].strip():
                raise DataError(f'{path}, line {line}: "instruction" must be a non-empty string')
            description = " ".join(row["instruction"].split())
            continue
        missing = [key for key in ("question", "choices", "answer") if key not in row]
        if missing:
            raise DataError(f"{path}, line {line}: no {' or '.join(map(repr, missing))} (found {sorted(row)}); "
                            'each line needs "question", "choices" and "answer" (an optional first line '
                            '{"instruction": ...} describes the task)')
        question, choices, answer = row["question"], row["choices"], row["answer"]
        if not isinstance(question, str) or not question.strip():
            raise DataError(f'{path}, line {line}: "question" must be a non-empty string')
        if (not isinstance(choices, list) or not all(isinstance(c, str) and c.strip() for c in choices)):
            raise DataError(f'{path}, line {line}: "choices" must be a list of non-empty strings')
        choices = tuple(" ".join(c.split()) for c in choices)
        if len(choices) < 2:
            raise DataError(f"{path}, line {line}: {len(choices)} choice(s); a multiple-choice question needs at "
                            "least two")
        if len(set(choices)) < len(choices):
            raise DataError(f"{path}, line {line}: the choices {list(choices)} repeat one; make them distinct")
        if isinstance(answer, int) and not isinstance(answer, bool):
            if not 0 <= answer < len(choices):
                raise DataError(f'{path}, line {line}: "answer" {answer} is not an index of the {len(choices)} '
                                f"choices (0 to {len(choices) - 1})")
            gold = answer
        elif isinstance(answer, str) and " ".join(answer.split()) in choices:
            gold = choices.index(" ".join(answer.split()))
        else:
            raise DataError(f'{path}, line {line}: "answer" {answer!r} is neither an index of the choices nor one '
                            f"of them ({list(choices)})")
        items.append(ICLItem(_clip(question, max_words), choices, gold, f"{path.name}, line {line}"))
    if not items:
        raise DataError(f"{path} has no questions; add one JSON object per line")
    return description, items


def _clip(text: str, max_words: int | None) -> str:
    words = text.split()
    return " ".join(words if max_words is None else words[:max_words])


def _or_list(names: Sequence[str]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


def task_requests(task: ICLTask, tokenizer, shots: int = 0, seed: int = 0, limit: int | None = None,
                  chat: bool = False, max_length: int | None = None) -> list[ICLPrompt]:
    """The prompts `evaluate` scores, one per item asked (the first `limit` of the task's test items):
    shots drawn as described at the top of this section, dropped from the end where the prompt and its
    longest choice would exceed `max_length` tokens (None: no limit)."""
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 0:
        raise ConfigError(f"shots must be a non-negative integer, got {shots!r}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigError(f"limit must be a positive integer (or None: every item), got {limit!r}")
    pool = len(task.train) - (1 if task.one_pool else 0)
    if shots > pool:
        where = "the other questions of the file" if task.one_pool else "its train split"
        raise ConfigError(f"{shots} shots asked, but task {task.name!r} holds only {pool} examples in {where}; "
                          f"use --shots {pool} or fewer")
    if chat and getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError("chat=True renders each prompt with the model's chat template, and this tokenizer has "
                          "none; load an instruction-tuned model's tokenizer (smollm2-135m-instruct) or drop chat")
    prefix = _prefix_token(tokenizer)
    rng = np.random.default_rng(seed)
    items = task.test if limit is None else task.test[:limit]
    prompts = []
    for index, item in enumerate(items):
        drawn = [int(j) for j in rng.choice(pool, size=shots, replace=False)] if shots else []
        if task.one_pool:     # the item is train[index]: draw from the others, skipping over it
            drawn = [j + 1 if j >= index else j for j in drawn]
        for used in range(shots, -1, -1):
            context, continuations = _render(task, item, drawn[:used], tokenizer, chat)
            tokens = max(sum(map(len, _encode_pair(tokenizer, context, c, prefix, index))) - 1 for c in continuations)
            if max_length is None or tokens <= max_length:
                break
        else:
            raise DataError(f"task {task.name!r}, {item.source}: the prompt is {tokens} tokens with no shots, more "
                            f"than the model's context of {max_length}; shorten the question (max_words) or use a "
                            "model with a longer context")
        prompts.append(ICLPrompt(item, context, continuations, item.gold, drawn[:used], shots, tokens))
    return prompts


def _render(task: ICLTask, item: ICLItem, shots: list[int], tokenizer, chat: bool) -> tuple[str, list[str]]:
    parts = [task.description] if task.description else []
    for j in shots:
        shot = task.train[j]
        parts.append(f"{task.render(shot)} {shot.choices[shot.gold]}")
    parts.append(task.render(item))
    prompt = "\n\n".join(parts)
    if chat:
        context = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
        return context, list(item.choices)
    return prompt, [" " + c for c in item.choices]


def evaluate(model, tokenizer, task: str | os.PathLike | ICLTask, shots: int = 0, seed: int = 0,
             limit: int | None = None, split: str = "test", chat: bool = False, batch_size: int = 8,
             max_words: int | None = None) -> dict:
    """k-shot multiple-choice accuracy of a causal LM on a task (`load_icl_task`: bbc-news,
    tweets-sentiment, or a .jsonl file; or an `ICLTask`), each choice scored by `loglikelihood`.

    Returns {task, split, n, accuracy, acc_norm, chance, shots, shots_mean, shots_requested, seed, chat,
    max_words, prompt_tokens_mean, prompt_tokens_max}: `accuracy` and `acc_norm` are fractions of the
    n items (`chance`: what guessing scores, the mean of 1 / number of choices); the rest of the
    n items; `shots` is the fewest shots an item's prompt kept (shots are dropped where the prompt would
    not fit the model's context) and `shots_mean` their mean; prompt tokens count what the model reads for
    an item's longest choice. Conventions (prompt format, shot sampling, acc_norm): see the comment above
    `ICL_TASKS` in this module and docs/results.md.
    """
    _need_causal_lm(model, "evaluate")
    _need_batch_size(batch_size)
    if not isinstance(task, ICLTask):
        task = load_icl_task(task, split=split, max_words=max_words)
    prompts = task_requests(task, tokenizer, shots=shots, seed=seed, limit=limit, chat=chat,
                            max_length=model.decoder_context)
    correct = correct_norm = 0
    for p in bar(prompts, desc=f"{task.name} {shots}-shot", enabled=len(prompts) > 1):
        # the choices share the prompt: it is read once (choice_loglikelihoods), not once per choice
        lls = np.array([ll for ll, _ in choice_loglikelihoods(model, tokenizer, p.context, p.continuations,
                                                                 batch_size)])
        lengths = np.array([len(c) for c in p.item.choices], dtype=np.float64)
        correct += int(np.argmax(lls) == p.gold)
        correct_norm += int(np.argmax(lls / lengths) == p.gold)
    used = [len(p.shots) for p in prompts]
    tokens = [p.tokens for p in prompts]
    n = len(prompts)
    chance = sum(1 / len(p.continuations) for p in prompts) / n
    return {"task": task.name, "split": task.split, "n": n,
            "accuracy": correct / n, "acc_norm": correct_norm / n, "chance": chance,
            "shots": min(used), "shots_mean": sum(used) / n, "shots_requested": shots, "seed": seed, "chat": chat,
            "max_words": max_words if max_words is not None else _DEFAULT_MAX_WORDS.get(task.name),
            "prompt_tokens_mean": sum(tokens) / n, "prompt_tokens_max": max(tokens)}
