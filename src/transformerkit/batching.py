"""Continuous batching: many requests decoded together, one step at a time, over the one decoding loop's
per-step functions (`decode_init` / `decode_step`, generation.py).

Requests wait in a bounded queue. Between two steps, finished and cancelled rows leave the batch and
waiting requests join it: their prompts are run together (left-padded) and their rows are merged into
the running KV cache (`DecodeState.gather_rows`), so a short reply does not wait for a long one and a
new request does not wait for the batch to drain (Yu et al. 2022, Orca's iteration-level scheduling).
An encoder-decoder's rows carry encoder outputs of different lengths: its requests are batched as they
wait together, and the next ones start when that batch is done.

One thread, the engine's, owns the model: it decodes, and runs whatever else must use the model
(`call`) between two steps. `submit` may be called from any thread; each job reports its tokens and its
end to a `listener` called in the engine's thread.
"""
from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from .errors import GenerationError
from .generation import warp_for_sampling
from .layers.packed import packed_linears
from .models import DecodeState


class QueueFull(GenerationError):
    """The engine's queue is full: try again later (HTTP 429)."""


class RequestError(GenerationError):
    """A request no decoding can honour; `field` names the Request field at fault, `code` says why in a word."""

    def __init__(self, message: str, field: str | None = None, code: str | None = None):
        super().__init__(message)
        self.field, self.code = field, code


@dataclass
class Request:
    """What one request asks for: `n` continuations of one prompt (token ids).
    temperature 0 is greedy decoding; stop: strings that end a continuation (not included in its text)."""
    prompt_ids: list[int]
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None      # continuation i samples with seed + i
    n: int = 1
    timeout: float | None = None  # seconds from submission, waiting included

    def check(self, model) -> None:
        """Raise RequestError for a request no decoding can honour."""
        if not self.prompt_ids and not model.is_encoder_decoder:
            raise RequestError("the prompt is empty; give at least one token", "prompt_ids")
        if self.max_new_tokens < 1:
            raise RequestError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}", "max_new_tokens")
        if self.temperature < 0:
            raise RequestError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}", "temperature")
        if not 0 < self.top_p <= 1:
            raise RequestError(f"top_p must be in (0, 1], got {self.top_p}", "top_p")
        if self.n < 1:
            raise RequestError(f"n must be at least 1, got {self.n}", "n")
        context = model.decoder_context
        if context is not None and len(self.prompt_ids) + self.max_new_tokens > context:
            raise RequestError(f"the prompt ({len(self.prompt_ids)} tokens) plus max_tokens ({self.max_new_tokens}) "
                               f"exceeds the model's context of {context} tokens", "max_new_tokens",
                               "context_length_exceeded")
        if model.is_encoder_decoder and model.config.positions != "relative":
            limit = model.config.max_position
            if len(self.prompt_ids) > limit or self.max_new_tokens + 1 > limit:
                raise RequestError(f"the prompt ({len(self.prompt_ids)} tokens) and max_tokens + 1 "
                                   f"({self.max_new_tokens + 1}) must each fit the model's {limit} positions",
                                   "max_new_tokens", "context_length_exceeded")


@dataclass
class Event:
    """What a job reports: new text of continuation `index`, or its end (`finish_reason` set: "stop" at an
    end-of-sequence token or a stop string, "length" at max_new_tokens, "timeout", "error")."""
    index: int
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0
    error: str | None = None


class Job:
    """A submitted request. Its events go to `listener(event)` (in the engine's thread), or, without a
    listener, into `events` (a queue.Queue) for `wait()`."""

    def __init__(self, request: Request, listener=None):
        self.request = request
        self.events: queue.Queue = queue.Queue()
        self.listener = listener or self.events.put
        self.cancelled = False
        self.deadline = None if request.timeout is None else time.monotonic() + request.timeout
        self.open = request.n          # continuations not yet finished

    def cancel(self) -> None:
        """Stop decoding this job's rows (its client went away): they leave the batch before the next step."""
        self.cancelled = True

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now > self.deadline

    def wait(self) -> list[Event]:
        """Block until every continuation has ended; return one Event per continuation with its whole text.
        For a job submitted without a listener."""
        texts, ends = [""] * self.request.n, [None] * self.request.n
        while any(e is None for e in ends):
            event = self.events.get()
            texts[event.index] += event.text
            if event.finish_reason is not None:
                ends[event.index] = event
        return [Event(e.index, texts[e.index], finish_reason=e.finish_reason, completion_tokens=e.completion_tokens,
                      error=e.error) for e in ends]


class _Row:
    """One continuation being decoded: its tokens, its random numbers, and the text it has reported."""

    def __init__(self, job: Job, index: int, device):
        self.job, self.index = job, index
        self.ids: list[int] = []      # the tokens of its text (an end-of-sequence token is not text)
        self.generated = 0            # tokens generated, the end-of-sequence token included
        self.text = ""                # the text of ids[:read]
        self.prefix = self.read = 0   # ids[prefix:read]: the tokens decoded again as context for the new ones
        self.sent = 0                 # characters of the text already reported
        seed = job.request.seed
        self.generator = None
        if seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(seed + index)

    def emit(self, tokenizer, stops: list[str], finished: str | None) -> str | None:
        """Report the text that is now certain; return the finish reason (a stop string ends the row).

        Each step decodes only the last tokens (incremental detokenization): the new ones, after the ones
        of the step before as context, so a tokenizer that writes a token's leading space depending on what
        precedes it still gets the text right; the cost per token does not grow with the reply."""
        tail = tokenizer.decode(self.ids[self.prefix:], skip_special_tokens=True)
        if finished is None and tail.endswith("\ufffd"):   # the first bytes of a character: wait for the rest
            return None
        head = tokenizer.decode(self.ids[self.prefix:self.read], skip_special_tokens=True)
        self.text += tail[len(head):]
        self.prefix, self.read = self.read, len(self.ids)
        text = self.text
        # A stop string can only start in what has not been reported (the held-back end) or after it.
        start = max(0, self.sent - max((len(s) for s in stops), default=0))
        hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
        if hits:
            text, finished = text[:min(hits)], "stop"
        elif finished is None:
            text = text[:len(text) - _held_back(text, stops)]
        new = text[self.sent:]
        self.sent = max(self.sent, len(text))
        if new or finished:
            self.job.listener(Event(self.index, new, finish_reason=finished, completion_tokens=self.generated))
        return finished


def _held_back(text: str, stops: list[str]) -> int:
    """Characters at the end of `text` that may be the start of a stop string (not reported yet)."""
    longest = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:k]):
                longest = k
                break
    return longest


class Engine:
    """Decodes the requests of many clients together; see the module's docstring.

    max_batch: rows (continuations) decoded together; max_queue: requests waiting beyond them, after
    which `submit` raises QueueFull. Start with `start()` (a daemon thread), stop with `stop()`.
    """

    def __init__(self, model, tokenizer, max_batch: int = 8, max_queue: int = 64):
        self.can_generate = model.can_generate   # an encoder (BERT) is served for the page only
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.max_queue = max_batch, max_queue
        self.waiting: deque[Job] = deque()
        self.calls: deque = deque()
        self.wake = threading.Condition()
        self.stopping = False
        self.thread: threading.Thread | None = None
        generation_config = getattr(model, "generation_config", None)
        eos = generation_config.eos_ids if generation_config is not None else []
        self.eos_ids = eos or ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.eos_ids or [0])[0]
        self.rows: list[_Row] = []     # the batch being decoded (the engine's thread only)
        self.state: DecodeState | None = None
        self.logits: torch.Tensor | None = None   # each row's next-token logits (B, V)
        self.steps = 0                 # decoding steps run (for tests and the benchmark)
        self.largest_batch = 0         # the most rows one step has decoded

    # --- any thread -----------------------------------------------------------------------------

    def submit(self, request: Request, listener=None) -> Job:
        """Queue a request; its events go to `listener` (see Job). Raises RequestError for a request that
        cannot be decoded, QueueFull when max_queue requests already wait."""
        if not self.can_generate:
            raise RequestError(f"{type(self.model).__name__} ({self.model.task}) does not generate text", "model",
                               "model_cannot_generate")
        request.check(self.model)
        if request.n > self.max_batch:
            raise RequestError(f"n={request.n} is more than the server decodes at once ({self.max_batch})", "n")
        job = Job(request, listener)
        with self.wake:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{len(self.waiting)} requests are already waiting (the limit); try again later")
            self.waiting.append(job)
            self.wake.notify()
        return job

    def call(self, fn, *args, **kwargs) -> concurrent.futures.Future:
        """Run fn(*args, **kwargs) in the engine's thread between two steps; its result comes in the Future."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self.wake:
            self.calls.append((future, fn, args, kwargs))
            self.wake.notify()
        return future

    def start(self) -> None:
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="tkit-engine", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        with self.wake:
            self.stopping = True
            self.wake.notify()
        if self.thread is not None:
            self.thread.join(timeout=60)

    # --- the engine's thread --------------------------------------------------------------------

    def _run(self) -> None:
        model = self.model
        model.eval()
        # The weights never change while serving: pack them once for the CPU's fast kernels.
        with torch.inference_mode(), packed_linears(model, rows=self.max_batch, enabled=self.can_generate):
            while True:
                with self.wake:
                    while not (self.stopping or self.calls or self.rows or self.waiting):
                        self.wake.wait()
                    if self.stopping:
                        break
                    calls = list(self.calls)
                    self.calls.clear()
                for future, fn, args, kwargs in calls:
                    if future.set_running_or_notify_cancel():
                        try:
                            future.set_result(fn(*args, **kwargs))
                        except BaseException as e:  # the caller gets it
                            future.set_exception(e)
                try:
                    self._step()
                except Exception as e:   # a failure ends the rows decoding now; the engine goes on
                    for row in self.rows:
                        row.job.listener(Event(row.index, finish_reason="error", error=f"{type(e).__name__}: {e}"))
                    self.rows, self.state, self.logits = [], None, None
            for row in self.rows:
                row.job.listener(Event(row.index, finish_reason="error", error="the server is shutting down"))
            for job in self.waiting:
                for i in range(job.request.n):
                    job.listener(Event(i, finish_reason="error", error="the server is shutting down"))

    def _step(self) -> None:
        """Rows leave, requests join, then every row gets one token and the cache one position."""
        now = time.monotonic()
        rows, state, logits = self.rows, self.state, self.logits
        # Leave: rows whose client went away or whose time is up.
        leaving = [r for r in rows if r.job.cancelled or r.job.expired(now)]
        for r in leaving:
            if not r.job.cancelled:
                r.job.listener(Event(r.index, finish_reason="timeout", completion_tokens=r.generated))
        if leaving:
            rows, state, logits = self._keep(rows, state, logits, [r not in leaving for r in rows])
        # Join: as many waiting jobs as fit (an encoder-decoder only joins an empty batch).
        joining = self._admit(rows, now)
        if joining:
            rows, state, logits = self.rows, self.state, self.logits = self._join(rows, state, logits, joining)
        if not rows:
            self.rows, self.state, self.logits = [], None, None
            return
        self.largest_batch = max(self.largest_batch, len(rows))
        # One token for every row.
        tokens = self._sample(rows, logits)
        alive = []
        for row, token in zip(rows, tokens):
            row.generated += 1
            finished = None
            if token in self.eos_ids:
                finished = "stop"
            else:
                row.ids.append(token)
                if row.generated >= row.job.request.max_new_tokens:
                    finished = "length"
            alive.append(row.emit(self.tokenizer, row.job.request.stop, finished) is None)
        if not all(alive):
            rows, state, logits = self._keep(rows, state, logits, alive)
            tokens = [t for t, a in zip(tokens, alive) if a]
        if rows:
            self.steps += 1
            fed = torch.tensor(tokens, device=logits.device)[:, None]
            logits = self.model.decode_step(state, fed)
        self.rows, self.state, self.logits = rows, state, logits

    def _admit(self, rows, now) -> list[Job]:
        if self.model.is_encoder_decoder and rows:
            return []
        joining, free = [], self.max_batch - len(rows)
        with self.wake:
            while self.waiting and self.waiting[0].request.n <= free:
                job = self.waiting.popleft()
                if job.cancelled:
                    continue
                if job.expired(now):
                    for i in range(job.request.n):
                        job.listener(Event(i, finish_reason="timeout"))
                    continue
                joining.append(job)
                free -= job.request.n
        return joining

    def _join(self, rows, state, logits, jobs: list[Job]):
        """Run the new prompts together (left-padded) and merge their rows into the batch."""
        model, device = self.model, next(self.model.parameters()).device
        prompts = [job.request.prompt_ids for job in jobs]
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        room = max(job.request.max_new_tokens for job in jobs)
        new_state, first = model.decode_init(input_ids, mask, room)
        new_logits = model.decode_step(new_state, first)                               # (J, V)
        # Each job's row, n times (its continuations share the prompt's cache).
        repeat = torch.tensor([j for j, job in enumerate(jobs) for _ in range(job.request.n)], device=device)
        new_rows = [_Row(job, i, device) for job in jobs for i in range(job.request.n)]
        new_logits = new_logits[repeat]
        if not rows:
            return new_rows, (new_state if len(repeat) == len(jobs) else new_state.select(repeat)), new_logits
        everyone = rows + new_rows
        room = max(r.job.request.max_new_tokens - r.generated for r in everyone)
        old = torch.arange(len(rows), device=device)
        state = DecodeState.gather_rows([(state, old), (new_state, repeat)], room)
        return everyone, state, torch.cat([logits, new_logits])

    @staticmethod
    def _keep(rows, state, logits, keep: list[bool]):
        """The rows marked in `keep`, and their cache and logits."""
        kept = [r for r, k in zip(rows, keep) if k]
        if not kept:
            return [], None, None
        index = torch.tensor([i for i, k in enumerate(keep) if k], device=logits.device)
        state.select(index)
        return kept, state, logits[index]

    def _sample(self, rows: list[_Row], logits: torch.Tensor) -> list[int]:
        """Each row's next token: the argmax at temperature 0, else a sample (temperature, top-p) drawn with
        the row's own generator, so a seeded request gets the same tokens whoever shares its batch."""
        scores = logits.float()
        greedy = scores.argmax(-1).tolist()
        tokens = []
        for i, row in enumerate(rows):
            request = row.job.request
            if request.temperature == 0:
                tokens.append(greedy[i])
                continue
            probs = warp_for_sampling(scores[i:i + 1], request.temperature, 0, request.top_p).softmax(-1)
            tokens.append(int(torch.multinomial(probs, 1, generator=row.generator)))
        return tokens
