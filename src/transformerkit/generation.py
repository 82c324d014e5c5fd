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
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from .errors import GenerationError
from .layers.packed import packed_linears


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
    """Prints the text of row 0 as tokens arrive, holding back bytes of an unfinished character."""

    def __init__(self, tokenizer, file=None):
        self.tokenizer, self.file = tokenizer, file or sys.stdout
        self.ids: list[int] = []
        self.printed = 0

    def __call__(self, new_tokens: torch.Tensor) -> None:
        self.ids.append(int(new_tokens[0]))
        text = self.tokenizer.decode(self.ids)
        if not text.endswith("\ufffd"):
            self.file.write(text[self.printed:])
            self.file.flush()
            self.printed = len(text)

    def end(self) -> None:
        self.file.write("\n")
        self.file.flush()


# --- the loop ------------------------------------------------------------------------------------

@torch.inference_mode()
def generate(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
             max_new_tokens: int = 64, do_sample: bool = False, num_beams: int = 1,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
             length_penalty: float = 1.0, early_stopping: bool | str = False,
             eos_token_id: int | list[int] | None = None, pad_token_id: int | None = None,
             stop_strings: list[str] | None = None, tokenizer=None, streamer=None,
             truncate_prompt: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Continue `input_ids` (B, T), left-padded where `attention_mask` is 0.

    Returns (B, T0 + n): for a decoder-only model the prompt followed by the new tokens; for an
    encoder-decoder the decoder's tokens from its start token (as `transformers` does). Rows that
    finish early (EOS or a stop string) are filled with `pad_token_id` (else the EOS id).
    """
    if max_new_tokens < 1:
        raise GenerationError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature <= 0:
        raise GenerationError(f"temperature must be > 0, got {temperature}; use do_sample=False for greedy")
    if stop_strings and tokenizer is None:
        raise GenerationError("stop_strings need the tokenizer (pass tokenizer=...) to read the generated text")
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    config = model.config
    eos_ids = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
    if pad_token_id is None:
        pad_token_id = config.pad_token_id if config.pad_token_id is not None else (eos_ids[0] if eos_ids else 0)
    input_ids, attention_mask = _fit_context(model, input_ids, attention_mask, max_new_tokens, truncate_prompt)
    if num_beams > 1 and do_sample:
        raise GenerationError("beam search with sampling is not supported; use num_beams=1 or do_sample=False")
    was_training = model.training
    model.eval()
    try:
        # Every step calls every linear layer with unchanged weights: pack them once (layers/packed.py),
        # unless the generation is too short to repay the packing.
        with packed_linears(model, rows=input_ids.shape[0] * num_beams, enabled=max_new_tokens >= 8):
            if num_beams > 1:
                return _beam_search(model, input_ids, attention_mask, num_beams, max_new_tokens, eos_ids,
                                    pad_token_id, length_penalty, early_stopping, repetition_penalty,
                                    no_repeat_ngram_size)
            return _sample(model, input_ids, attention_mask, max_new_tokens, do_sample, temperature, top_k,
                           top_p, repetition_penalty, no_repeat_ngram_size, eos_ids, pad_token_id, stop_strings,
                           tokenizer, streamer, generator)
    finally:
        model.train(was_training)


def _fit_context(model, input_ids, attention_mask, max_new_tokens, truncate):
    """Check (or make) the prompt plus the new tokens fit a decoder-only model's context."""
    limit = getattr(model, "decoder_context", None)
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


def _process(seqs, scores, repetition_penalty, no_repeat_ngram_size):
    if repetition_penalty != 1.0:
        scores = apply_repetition_penalty(seqs, scores, repetition_penalty)
    if no_repeat_ngram_size > 0:
        scores = ban_repeated_ngrams(seqs, scores, no_repeat_ngram_size)
    return scores


def _sample(model, input_ids, attention_mask, max_new_tokens, do_sample, temperature, top_k, top_p,
            repetition_penalty, no_repeat_ngram_size, eos_ids, pad_token_id, stop_strings, tokenizer,
            streamer, generator):
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
        scores = _process(out[:, :cur], logits.float(), repetition_penalty, no_repeat_ngram_size)
        if do_sample:
            probs = warp_for_sampling(scores, temperature, top_k, top_p).softmax(-1)
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


def _beam_search(model, input_ids, attention_mask, K, max_new_tokens, eos_ids, pad_token_id,
                 length_penalty, early_stopping, repetition_penalty, no_repeat_ngram_size):
    """Beam search with K beams, each step choosing among the best 2K continuations of all beams.

    A continuation that ends (EOS or the length limit) among the top K joins the finished
    hypotheses with score sum(log p) / generated_len ** length_penalty; the best K that do not end
    keep running. Stops when no running beam can beat the worst finished one.
    """
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
        log_probs = _process(running[:, :, :cur].reshape(B * K, cur), log_probs, repetition_penalty,
                             no_repeat_ngram_size)
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


def generate_text(model, tokenizer, prompts: str | list[str], *, max_new_tokens: int = 64, stream: bool = False,
                  seed: int | None = None, truncate_prompt: bool = False, stop_strings: list[str] | None = None,
                  **kwargs) -> list[str]:
    """Text in, text out: encode the prompts (left-padded as a batch), `generate`, decode the new part.

    A decoder-only model writes past its context by sliding a window: once prompt + text fill the
    context, it continues from the last half of it (the KV cache is rebuilt; positions restart),
    as nanoGPT does. A prompt that alone fills the context is an error unless truncate_prompt.
    stream=True prints the first row's text as it is generated. Other `kwargs` go to `generate`;
    eos_token_id defaults to the tokenizer's, so generation stops at its end-of-text token.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    rows = [tokenizer.encode(p) for p in prompts]
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    for i, row in enumerate(rows):
        if not row and not model.is_encoder_decoder:
            if start is None:
                raise GenerationError(f"prompt {i} is empty and the tokenizer has no start-of-text token; "
                                      "give a prompt of at least one character")
            row.append(start)
    limit = None if model.is_encoder_decoder else getattr(model, "decoder_context", None)
    if limit is not None and max(len(r) for r in rows) >= limit:
        if not truncate_prompt:
            raise GenerationError(f"a prompt of {max(len(r) for r in rows)} tokens exceeds the model's context of "
                                  f"{limit} tokens; shorten it, or truncate it (truncate_prompt=True / --truncate "
                                  "keeps its last tokens)")
        rows = [r[-(limit // 2):] for r in rows]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (start or 0)
    eos = kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
    eos_ids = set() if eos is None else ({eos} if isinstance(eos, int) else set(eos))
    kwargs.setdefault("pad_token_id", pad)
    device = next(model.parameters()).device
    streamer = TextStreamer(tokenizer) if stream else None
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None

    new: list[list[int]] = [[] for _ in rows]
    done = [False] * len(rows)
    remaining = max_new_tokens
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
        out = generate(model, input_ids, attention_mask, max_new_tokens=step, generator=generator,
                       streamer=streamer if active[0] == 0 else None, stop_strings=stop_strings,
                       tokenizer=tokenizer, **kwargs)
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
