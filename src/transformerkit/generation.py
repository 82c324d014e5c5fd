"""One decoding loop for every decoder: greedy, sampling (temperature, top-k, top-p) and beam search.

A model takes part through two methods:
    state, tokens = model.decode_init(input_ids, attention_mask, max_new_tokens)
        runs nothing yet; `tokens` (B, T0) are what the decoder starts from: the prompt for a
        decoder-only model, the start token for an encoder-decoder (whose encoder runs here, once).
    logits = model.decode_step(state, new_tokens)
        feeds (B, t) tokens after those in the KV cache and returns next-token logits (B, V).
So each new token costs one decoder step over one position. Beam search follows the
algorithm of Hugging Face `transformers` (same candidates, same length penalty, same
stopping rule), so the two give the same tokens on the same weights.

The settings of a call are one `GenerationConfig`, checked once before any decoding; a model
loaded with `tk.load` carries its checkpoint's `generation_config.json` as `model.generation_config`.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from .config import DictMixin
from .errors import ConfigError, GenerationError
from .files import atomic_write
from .layers.packed import packed_linears

# --- settings ------------------------------------------------------------------------------------

GENERATION_CONFIG_FILE = "generation_config.json"

# Keys of a transformers-written generation_config.json that cannot change the tokens we generate (besides
# its bookkeeping): what transformers returns besides the tokens, its cache switch, and the id it starts
# from when given no prompt at all (we always have one).
_HARMLESS_KEYS = {"use_cache", "output_attentions", "output_hidden_states", "output_scores", "output_logits",
                  "return_dict_in_generate", "bos_token_id"}
# transformers' settings we do not implement, accepted only at the value that switches them off.
_OFF_VALUES = {"min_length": 0, "min_new_tokens": None, "num_return_sequences": 1, "typical_p": 1.0,
               "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "min_p": None, "diversity_penalty": 0.0,
               "num_beam_groups": 1, "encoder_repetition_penalty": 1.0, "encoder_no_repeat_ngram_size": 0,
               "bad_words_ids": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
               "suppress_tokens": None, "begin_suppress_tokens": None, "exponential_decay_length_penalty": None,
               "renormalize_logits": False, "remove_invalid_values": False, "penalty_alpha": None,
               "max_time": None, "guidance_scale": None, "sequence_bias": None}


@dataclass
class GenerationConfig(DictMixin):
    """How `generate` decodes: one dataclass, checked once when it is made (as transformers'
    `GenerationConfig`), so the decoding loops never see an impossible setting.

    Every impossible value is a `GenerationError` saying what to change. `replace(**changes)` gives a
    checked copy; `save_pretrained(dir)` / `from_pretrained(dir)` write and read `generation_config.json`
    beside a checkpoint, with transformers' key names, so either library reads the other's file.
    """
    max_new_tokens: int = 64
    do_sample: bool = False          # sample (temperature, top_k, top_p) instead of taking the argmax
    num_beams: int = 1               # > 1: beam search (deterministic; not with do_sample)
    temperature: float = 1.0
    top_k: int = 0                   # sample among the k most likely tokens; 0 = all (transformers' default: 50)
    top_p: float = 1.0               # nucleus sampling: the smallest set reaching this probability; 1.0 = off
    repetition_penalty: float = 1.0  # CTRL's penalty on tokens already in the sequence; 1.0 = off
    no_repeat_ngram_size: int = 0    # forbid repeating any n-gram of this size; 0 = off
    length_penalty: float = 1.0      # beam search: a finished hypothesis scores sum(log p) / length ** this
    early_stopping: bool | str = False   # beam search: True, False (transformers' heuristic) or "never"
    eos_token_id: int | list[int] | None = None   # a row ends at any of these; None: rows run to max_new_tokens
    pad_token_id: int | None = None  # fills finished rows; None: the model's pad id, else the first EOS id
    stop_strings: list[str] | None = None   # a row ends once its text contains one (needs the tokenizer)
    truncate_prompt: bool = False    # keep the last tokens of a prompt too long for the context (else an error)
    # Read from a file (from_pretrained): its other keys, those of them we cannot honour, and the file.
    # Not fields: a config made or replace()d in code starts without them.
    _theirs: ClassVar[dict] = {}
    _refused: ClassVar[list] = []
    _source: ClassVar[Path | None] = None

    def __post_init__(self):
        if isinstance(self.eos_token_id, tuple):
            self.eos_token_id = list(self.eos_token_id)
        if isinstance(self.stop_strings, (tuple, str)):
            self.stop_strings = [self.stop_strings] if isinstance(self.stop_strings, str) else list(self.stop_strings)
        self.validate()

    def validate(self) -> None:
        """Raise GenerationError for a value of the wrong type or a setting no decoding can honour."""
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise GenerationError(message)

        def is_int(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_number(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        for name in ("max_new_tokens", "num_beams", "top_k", "no_repeat_ngram_size"):
            need(is_int(getattr(self, name)), f"{name} must be an integer, got {getattr(self, name)!r}")
        for name in ("temperature", "top_p", "repetition_penalty", "length_penalty"):
            need(is_number(getattr(self, name)), f"{name} must be a number, got {getattr(self, name)!r}")
        for name in ("do_sample", "truncate_prompt"):
            need(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}")
        need(self.max_new_tokens >= 1, f"max_new_tokens must be at least 1, got {self.max_new_tokens}; "
                                       "ask for one or more new tokens")
        need(self.num_beams >= 1, f"num_beams must be at least 1, got {self.num_beams}; use 1 for greedy or "
                                  "sampling, more for beam search")
        need(self.temperature > 0, f"temperature must be > 0, got {self.temperature}; for greedy decoding "
                                   "use do_sample=False (tkit: --greedy)")
        need(self.top_k >= 0, f"top_k must be >= 0 (0 = no top-k filter), got {self.top_k}")
        need(0 < self.top_p <= 1, f"top_p must be in (0, 1] (1.0 = no nucleus filter), got {self.top_p}")
        need(self.repetition_penalty > 0, f"repetition_penalty must be > 0 (1.0 = off), got "
                                          f"{self.repetition_penalty}")
        need(self.no_repeat_ngram_size >= 0, f"no_repeat_ngram_size must be >= 0 (0 = off), got "
                                             f"{self.no_repeat_ngram_size}")
        need(isinstance(self.early_stopping, bool) or self.early_stopping == "never",
             f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        need(not (self.num_beams > 1 and self.do_sample),
             "beam search with sampling is not supported; use num_beams=1 to sample, or do_sample=False "
             "for beam search")
        eos = self.eos_token_id
        need(eos is None or (is_int(eos) and eos >= 0)
             or (isinstance(eos, list) and all(is_int(t) and t >= 0 for t in eos)),
             f"eos_token_id must be a token id, a list of them, or None; got {eos!r}")
        need(self.pad_token_id is None or (is_int(self.pad_token_id) and self.pad_token_id >= 0),
             f"pad_token_id must be a token id or None, got {self.pad_token_id!r}")
        need(self.stop_strings is None or (isinstance(self.stop_strings, list)
                                           and all(isinstance(s, str) and s for s in self.stop_strings)),
             f"stop_strings must be a list of non-empty strings (an empty one would stop at once), got "
             f"{self.stop_strings!r}")

    @property
    def eos_ids(self) -> list[int]:
        """The EOS ids as a list (empty: no EOS)."""
        eos = self.eos_token_id
        return [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))

    def replace(self, **changes) -> GenerationConfig:
        """A checked copy with some settings changed; an unknown setting is an error."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise GenerationError(f"unknown generation setting(s) {unknown}; known settings: {sorted(known)}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict) -> GenerationConfig:
        """From our own field names only (to_dict's output); unknown keys are an error."""
        try:
            return super().from_dict(d)
        except ConfigError as e:   # DictMixin's check; this class's errors are all GenerationErrors
            raise GenerationError(str(e)) from None

    @property
    def unsupported(self) -> dict:
        """Settings of a transformers-written file that we do not implement (see from_pretrained)."""
        return {k: self._theirs[k] for k in self._refused}

    def save_pretrained(self, directory, model_config=None) -> Path:
        """Write `generation_config.json` into `directory` atomically (files.atomic_write). Every field
        is written, so transformers' defaults (top_k 50, max_length 20) never stand in for ours; the
        other keys of a file this config was read from are written back as they were. Given the model's
        config, its bos and decoder start ids are written too: transformers takes them from this file."""
        theirs = dict(self._theirs)
        for key in ("bos_token_id", "decoder_start_token_id"):
            if getattr(model_config, key, None) is not None:
                theirs.setdefault(key, getattr(model_config, key))
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / GENERATION_CONFIG_FILE
        atomic_write(path, json.dumps({**theirs, **self.to_dict()}, indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, directory, model_config=None, strict: bool = True) -> GenerationConfig | None:
        """Read `directory/generation_config.json` (ours or transformers'); None when there is none.

        Read: our fields (transformers' names). A key absent from the file means transformers' default,
        which is ours except top_k (50 there, so absent top_k reads as 50) and the length: transformers
        stops at max_length=20 tokens in all, we at max_new_tokens=64 new ones. Set aside as harmless:
        bookkeeping and output switches (_from_model_config, transformers_version, use_cache, output_*,
        ...), bos_token_id, decoder_start_token_id when it is the model's own (`model_config`),
        forced_eos_token_id when it is an EOS id (transformers then forces EOS as the last token at the
        length limit; we do not), max_length beside max_new_tokens (which transformers obeys instead),
        and transformers' other settings at their "off" value. A file that is not a JSON object of
        valid settings is a GenerationError.

        Any other key is a setting we would silently not honour: a GenerationError, or with strict=False
        (what `tk.load` uses, so the weights still load) kept in `unsupported`, and `generate` refuses to
        decode with this config until given settings of the caller's own. The keys we do not read are
        written back by save_pretrained, so a converted checkpoint keeps them for transformers.
        """
        path = Path(directory) / GENERATION_CONFIG_FILE
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise GenerationError(f"{path}: not readable as JSON ({e}); fix or delete the file") from None
        if not isinstance(raw, dict):
            raise GenerationError(f"{path}: expected a JSON object of generation settings, got "
                                  f"{type(raw).__name__}; fix or delete the file")
        fields = {f.name for f in dataclasses.fields(cls)}
        # null is how transformers writes "unset", i.e. its default (ours, except top_k).
        ours = {k: v for k, v in raw.items() if k in fields and (v is not None or k in _NULLABLE)}
        ours.setdefault("top_k", 50)
        try:
            config = cls(**ours)
        except GenerationError as e:
            raise GenerationError(f"{path}: {e}") from None
        config._theirs = {k: v for k, v in raw.items() if k not in fields and k not in _BOOKKEEPING_KEYS}
        config._refused = [k for k, v in config._theirs.items() if not config._harmless(k, v, ours, model_config)]
        config._source = path
        if strict and config._refused:
            raise GenerationError(config._unsupported_message())
        return config

    def _harmless(self, key: str, value, ours: dict, model_config) -> bool:
        if key in _HARMLESS_KEYS or (key in _OFF_VALUES and value == _OFF_VALUES[key]):
            return True
        if key == "forced_eos_token_id":
            return value in self.eos_ids
        if key == "max_length":
            return "max_new_tokens" in ours
        if key == "decoder_start_token_id":
            return model_config is None or model_config.decoder_start_token_id in (None, value)
        return False

    def _unsupported_message(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.unsupported.items())
        hint = " (max_length counts the prompt too: give max_new_tokens instead)" if "max_length" in self._refused \
            else ""
        return (f"{self._source}: transformerkit does not implement {settings}{hint}; remove these keys from the "
                "file, or give settings of your own (config=tk.GenerationConfig(...); "
                "model.generation_config.replace() keeps the rest)")


_NULLABLE = {"eos_token_id", "pad_token_id", "stop_strings"}
_BOOKKEEPING_KEYS = {"_from_model_config", "transformers_version", "_commit_hash"}


def generation_settings(model, config: GenerationConfig | None = None, overrides: dict | None = None
                        ) -> GenerationConfig:
    """The settings a call decodes with: `overrides` on top of `config`, else of the model's
    `generation_config` (read with its checkpoint), else the defaults -- checked once, here."""
    return _base_settings(model, config).replace(**(overrides or {}))


def _base_settings(model, config: GenerationConfig | None) -> GenerationConfig:
    if config is None:
        config = model.generation_config or GenerationConfig()
    if not isinstance(config, GenerationConfig):
        raise GenerationError(f"config must be a GenerationConfig, got {type(config).__name__}; pass settings "
                              "as keywords (max_new_tokens=...) or build a GenerationConfig(...)")
    if config.unsupported:   # a checkpoint's setting we cannot honour: refuse rather than decode otherwise
        raise GenerationError(config._unsupported_message())
    return config


# --- logits processors: (sequences (N, T), scores (N, V)) -> scores -------------------------------

def apply_repetition_penalty(seqs: torch.Tensor, scores: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty (Keskar et al. 2019): make every token already in the sequence less likely."""
    seen = scores.gather(1, seqs)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return scores.scatter(1, seqs, seen)


def ban_repeated_ngrams(seqs: torch.Tensor, scores: torch.Tensor, n: int) -> torch.Tensor:
    """Forbid any token that would complete an n-gram the sequence already contains."""
    if seqs.shape[1] + 1 < n:
        return scores
    scores = scores.clone()
    for row, tokens in enumerate(seqs.tolist()):
        prefix = tuple(tokens[len(tokens) - n + 1:]) if n > 1 else ()
        banned = {tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i:i + n - 1]) == prefix}
        if banned:
            scores[row, list(banned)] = float("-inf")
    return scores


def warp_for_sampling(scores: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature, then keep the top_k most likely tokens, then the smallest set whose probability
    reaches top_p (nucleus sampling, Holtzman et al. 2020). Removed tokens get -inf."""
    if temperature != 1.0:
        scores = scores / temperature
    if top_k > 0:
        kth = scores.topk(min(top_k, scores.shape[-1])).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = scores.sort(descending=True)
        cumulative = sorted_scores.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_scores.softmax(-1) >= top_p   # keep the token that crosses top_p
        scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return scores


class TextStreamer:
    """Prints the text of row 0 as tokens arrive, holding back bytes of an unfinished character;
    skip_special_tokens: leave out special tokens (a chat reply's end-of-turn token)."""

    def __init__(self, tokenizer, file=None, skip_special_tokens: bool = False):
        self.tokenizer, self.file = tokenizer, file or sys.stdout
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.printed = 0

    def __call__(self, new_tokens: torch.Tensor) -> None:
        self.ids.append(int(new_tokens[0]))
        text = self.tokenizer.decode(self.ids, skip_special_tokens=self.skip_special_tokens)
        if not text.endswith("\ufffd"):
            self.file.write(text[self.printed:])
            self.file.flush()
            self.printed = len(text)

    def end(self) -> None:
        self.file.write("\n")
        self.file.flush()


# --- the loop ------------------------------------------------------------------------------------

@torch.inference_mode()
def generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
             config: GenerationConfig | None = None, *, tokenizer=None, streamer=None,
             generator: torch.Generator | None = None, **overrides) -> torch.Tensor:
    """Continue `input_ids` (B, T), left-padded where `attention_mask` is 0.

    Settings: `config` (a GenerationConfig; None: the model's `generation_config`, which `tk.load` reads
    from the checkpoint, else the defaults) with any of its fields given as keywords on top
    (max_new_tokens=..., num_beams=..., eos_token_id=...); the result is checked once, before decoding.
    The objects of this one call stay keywords: `tokenizer` (to read the text for stop_strings),
    `streamer` (called with each step's new tokens (B,); sampling and greedy only), `generator`
    (the random numbers of sampling).

    Returns (B, T0 + n): for a decoder-only model the prompt followed by the new tokens; for an
    encoder-decoder the decoder's tokens from its start token (as `transformers` does). Rows that
    finish early (EOS or a stop string) are filled with `pad_token_id` (else the EOS id).
    """
    config = generation_settings(model, config, overrides)
    if config.stop_strings and tokenizer is None:
        raise GenerationError("stop_strings need the tokenizer (pass tokenizer=...) to read the generated text")
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    pad_token_id = config.pad_token_id
    if pad_token_id is None:
        eos_ids = config.eos_ids
        pad_token_id = model.config.pad_token_id if model.config.pad_token_id is not None else \
            (eos_ids[0] if eos_ids else 0)
    input_ids, attention_mask = _fit_context(model, input_ids, attention_mask, config.max_new_tokens,
                                             config.truncate_prompt)
    was_training = model.training
    model.eval()
    try:
        # Every step calls every linear layer with unchanged weights: pack them once (layers/packed.py),
        # unless the generation is too short to repay the packing.
        with packed_linears(model, rows=input_ids.shape[0] * config.num_beams, enabled=config.max_new_tokens >= 8):
            if config.num_beams > 1:
                return _beam_search(model, input_ids, attention_mask, config, pad_token_id)
            return _sample(model, input_ids, attention_mask, config, pad_token_id, tokenizer, streamer, generator)
    finally:
        model.train(was_training)


def _fit_context(model, input_ids, attention_mask, max_new_tokens, truncate):
    """Check (or make) the prompt plus the new tokens fit a decoder-only model's context."""
    limit = model.decoder_context
    if limit is None:
        return input_ids, attention_mask
    need = input_ids.shape[1] + max_new_tokens
    if need <= limit:
        return input_ids, attention_mask
    keep = limit - max_new_tokens
    if not truncate or keep < 1:
        raise GenerationError(
            f"the prompt ({input_ids.shape[1]} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the model's "
            f"context of {limit} tokens; shorten the prompt, lower max_new_tokens, or truncate the prompt "
            "(truncate_prompt=True / --truncate keeps its last tokens)")
    input_ids = input_ids[:, -keep:]
    return input_ids, (attention_mask[:, -keep:] if attention_mask is not None else None)


def _process(seqs, scores, config: GenerationConfig):
    if config.repetition_penalty != 1.0:
        scores = apply_repetition_penalty(seqs, scores, config.repetition_penalty)
    if config.no_repeat_ngram_size > 0:
        scores = ban_repeated_ngrams(seqs, scores, config.no_repeat_ngram_size)
    return scores


def _sample(model, input_ids, attention_mask, config: GenerationConfig, pad_token_id: int, tokenizer, streamer,
            generator):
    """Greedy decoding, or sampling with config.do_sample."""
    max_new_tokens, eos_ids, stop_strings = config.max_new_tokens, config.eos_ids, config.stop_strings
    state, seqs = model.decode_init(input_ids, attention_mask, max_new_tokens)
    logits = model.decode_step(state, seqs)                                        # (B, V)
    start = seqs.shape[1]
    eos = torch.tensor(eos_ids, device=seqs.device)
    finished = torch.zeros(seqs.shape[0], dtype=torch.bool, device=seqs.device)
    out = torch.full((seqs.shape[0], start + max_new_tokens), pad_token_id, dtype=seqs.dtype, device=seqs.device)
    out[:, :start] = seqs
    stop_window = max((len(s) for s in stop_strings), default=0) + 2 if stop_strings else 0
    for i in range(max_new_tokens):
        cur = start + i
        scores = _process(out[:, :cur], logits.float(), config)
        if config.do_sample:
            probs = warp_for_sampling(scores, config.temperature, config.top_k, config.top_p).softmax(-1)
            next_tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            next_tokens = scores.argmax(-1)
        next_tokens = torch.where(finished, pad_token_id, next_tokens)
        out[:, cur] = next_tokens
        if streamer is not None:
            streamer(next_tokens)
        if len(eos_ids):
            finished |= torch.isin(next_tokens, eos)
        if stop_strings:
            for row in (~finished).nonzero().flatten().tolist():
                tail = tokenizer.decode(out[row, max(start, cur + 1 - stop_window):cur + 1].tolist())
                finished[row] = any(s in tail for s in stop_strings)
        if bool(finished.all()):
            return out[:, :cur + 1]
        if i + 1 < max_new_tokens:
            logits = model.decode_step(state, next_tokens[:, None])
    return out


def _beam_search(model, input_ids, attention_mask, config: GenerationConfig, pad_token_id: int):
    """Beam search with K = config.num_beams beams, each step choosing among the best 2K continuations
    of all beams.

    A continuation that ends (EOS or the length limit) among the top K joins the finished
    hypotheses with score sum(log p) / generated_len ** length_penalty; the best K that do not end
    keep running. Stops when no running beam can beat the worst finished one.
    """
    K, max_new_tokens, eos_ids = config.num_beams, config.max_new_tokens, config.eos_ids
    length_penalty, early_stopping = config.length_penalty, config.early_stopping
    B = input_ids.shape[0]
    input_ids = input_ids.repeat_interleave(K, dim=0)                              # (B*K, T)
    if attention_mask is not None:
        attention_mask = attention_mask.repeat_interleave(K, dim=0)
    state, seqs = model.decode_init(input_ids, attention_mask, max_new_tokens)
    logits = model.decode_step(state, seqs)                                        # (B*K, V)
    device, T0 = seqs.device, seqs.shape[1]
    max_len = T0 + max_new_tokens
    V = logits.shape[-1]
    n_keep = max(2, 1 + len(eos_ids)) * K
    in_top_k = torch.arange(n_keep, device=device) < K                             # (n_keep,)
    eos = torch.tensor(eos_ids, device=device)
    fill = pad_token_id

    running = torch.full((B, K, max_len), fill, dtype=torch.long, device=device)
    running[:, :, :T0] = seqs.view(B, K, T0)
    running_scores = torch.zeros(B, K, device=device)
    running_scores[:, 1:] = -1e9                     # all beams start equal: expand only the first
    done_seqs = running.clone()
    done_scores = torch.full((B, K), -1e9, device=device)
    done_lens = torch.zeros(B, K, dtype=torch.long, device=device)
    done_flags = torch.zeros(B, K, dtype=torch.bool, device=device)
    can_improve = torch.ones(B, 1, dtype=torch.bool, device=device)
    batch_offset = torch.arange(B, device=device)[:, None] * K

    for cur in range(T0, max_len):
        log_probs = F.log_softmax(logits.float(), dim=-1)
        log_probs = _process(running[:, :, :cur].reshape(B * K, cur), log_probs, config)
        totals = (log_probs.view(B, K, V) + running_scores[:, :, None]).view(B, K * V)
        top_scores, top_index = totals.topk(n_keep)                                 # (B, n_keep)
        source_beam, token = top_index // V, top_index % V
        candidates = running.gather(1, source_beam[:, :, None].expand(-1, -1, max_len)).clone()
        candidates[:, :, cur] = token
        ends = torch.isin(token, eos) if len(eos_ids) else torch.zeros_like(token, dtype=torch.bool)
        if cur + 1 == max_len:
            ends = torch.ones_like(ends)

        # Running beams for the next step: the best K candidates that did not end.
        alive_scores = top_scores + ends.float() * -1e9
        pick = alive_scores.topk(K).indices                                          # (B, K)
        running = candidates.gather(1, pick[:, :, None].expand(-1, -1, max_len))
        running_scores = alive_scores.gather(1, pick)
        parent = (source_beam.gather(1, pick) + batch_offset).flatten()              # (B*K,)

        # Finished hypotheses: merge the top-K candidates that just ended, length-penalised.
        just_done = ends & in_top_k
        scored = top_scores / ((cur + 1 - T0) ** length_penalty)
        all_done = done_flags.all(-1, keepdim=True) & (early_stopping is True)
        scored = scored + all_done.float() * -1e9 + (~can_improve).float() * -1e9 + (~just_done).float() * -1e9
        merged_scores = torch.cat([done_scores, scored], 1)
        best = merged_scores.topk(K).indices
        done_seqs = torch.cat([done_seqs, candidates], 1).gather(1, best[:, :, None].expand(-1, -1, max_len))
        done_scores = merged_scores.gather(1, best)
        done_lens = torch.cat([done_lens, torch.full_like(token, cur + 1 - T0)], 1).gather(1, best)
        done_flags = torch.cat([done_flags, just_done], 1).gather(1, best)

        # Could a running beam still beat the worst finished one?
        if early_stopping == "never" and length_penalty > 0:
            best_len = max_len - T0
        else:
            best_len = cur + 1 - T0
        best_running = running_scores[:, :1] / best_len ** length_penalty
        worst_done = torch.where(done_flags, done_scores.min(1, keepdim=True).values, -1e9)
        can_improve &= (best_running > worst_done).any(-1, keepdim=True)
        if not bool(can_improve.any()) or (bool(done_flags.all()) and early_stopping is True) or bool(ends.all()):
            break
        state.reorder(parent)
        logits = model.decode_step(state, running[:, :, cur].reshape(B * K, 1))

    best_seqs, best_lens = done_seqs[:, 0], done_lens[:, 0]                         # (B, max_len), (B,)
    return best_seqs[:, :T0 + int(best_lens.max())]


def generate_text(model, tokenizer, prompts: str | list[str], config: GenerationConfig | None = None, *,
                  stream: bool = False, seed: int | None = None, **overrides) -> list[str]:
    """Text in, text out: encode the prompts (left-padded as a batch), `generate`, decode the new part.

    Settings as for `generate` (`config` and keyword overrides, checked before any work). A
    decoder-only model writes past its context by sliding a window: once prompt + text fill the
    context, it continues from the last half of it (the KV cache is rebuilt; positions restart),
    as nanoGPT does, so max_new_tokens may exceed the context. A prompt that alone fills the context
    is an error unless truncate_prompt. stream=True prints the first row's text as it is generated.
    eos_token_id and pad_token_id default to the tokenizer's when neither the settings nor the model's
    generation_config give one, so generation stops at its end-of-text token.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (start or 0)
    base = _base_settings(model, config)
    from_tokenizer = {name: value for name, value in (("eos_token_id", tokenizer.eos_token_id), ("pad_token_id", pad))
                      if getattr(base, name) is None}
    settings = base.replace(**{**from_tokenizer, **overrides})
    rows = [tokenizer.encode(p) for p in prompts]
    for i, row in enumerate(rows):
        if not row and not model.is_encoder_decoder:
            if start is None:
                raise GenerationError(f"prompt {i} is empty and the tokenizer has no start-of-text token; "
                                      "give a prompt of at least one character")
            row.append(start)
    limit = None if model.is_encoder_decoder else model.decoder_context
    if limit is not None and max(len(r) for r in rows) >= limit:
        if not settings.truncate_prompt:
            raise GenerationError(f"a prompt of {max(len(r) for r in rows)} tokens exceeds the model's context of "
                                  f"{limit} tokens; shorten it, or truncate it (truncate_prompt=True / --truncate "
                                  "keeps its last tokens)")
        rows = [r[-(limit // 2):] for r in rows]
    eos_ids = set(settings.eos_ids)
    stop_strings = settings.stop_strings
    device = next(model.parameters()).device
    streamer = TextStreamer(tokenizer) if stream else None
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None

    new: list[list[int]] = [[] for _ in rows]
    done = [False] * len(rows)
    remaining = settings.max_new_tokens
    while remaining > 0 and not all(done):
        active = [i for i, d in enumerate(done) if not d]
        contexts = [rows[i] + new[i] for i in active]
        step = remaining
        if limit is not None:   # keep the context's last part, leaving room for this round's tokens
            longest = min(max(len(c) for c in contexts), limit - min(remaining, limit // 2))
            contexts = [c[-longest:] for c in contexts]
            step = min(remaining, limit - longest)
        width = max(len(c) for c in contexts)
        input_ids = torch.tensor([[pad] * (width - len(c)) + c for c in contexts], device=device)
        attention_mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts], device=device)
        out = generate(model, input_ids, attention_mask, settings, max_new_tokens=step, generator=generator,
                       streamer=streamer if active[0] == 0 else None, tokenizer=tokenizer)
        generated = out[:, 1:] if model.is_encoder_decoder else out[:, width:]   # drop the start / the prompt
        for i, row in zip(active, generated.tolist()):
            end = next((j for j, t in enumerate(row) if t in eos_ids), len(row))
            new[i] += row[:end]
            stopped = stop_strings and any(s in tokenizer.decode(new[i]) for s in stop_strings)
            done[i] = end < len(row) or len(row) < step or bool(stopped) or model.is_encoder_decoder
        remaining -= step
    if streamer is not None:
        streamer.end()
    return [_cut_at_stop(tokenizer.decode(ids), stop_strings) for ids in new]


def _cut_at_stop(text: str, stop_strings: list[str] | None) -> str:
    """Text up to and including the first stop string (what follows is padding of a finished row)."""
    ends = [text.index(s) + len(s) for s in stop_strings or [] if s in text]
    return text[:min(ends)] if ends else text
