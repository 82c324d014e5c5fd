"""The OpenAI-compatible routes: GET /v1/models, POST /v1/completions and POST /v1/chat/completions, with
server-sent events for `stream: true`. Each route checks its body (pydantic; a field we do not
implement is refused, not ignored), turns it into `batching.Request`s for the engine, and writes the
engine's events back in OpenAI's shapes."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..batching import QueueFull, RequestError
from ..batching import Request as EngineRequest
from ..chat import DEFAULT_MAX_NEW_TOKENS, chat_prompt
from ..errors import TransformerKitError
from .errors import APIError

COMPLETION_MAX_TOKENS = 16      # OpenAI's default for /v1/completions
TRANSCRIPT_STOP = "\nuser:"     # a model without a chat template continues a plain transcript (chat.plain_prompt)
# The engine's Request fields under their OpenAI names, for an error's `param`.
REQUEST_PARAMS = {"max_new_tokens": "max_tokens", "prompt_ids": "prompt"}


class Sampling(BaseModel):
    """The settings both routes share. Unknown fields are refused (400), so nothing is silently ignored."""
    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = Field(None, validate_default=True)   # always a list after validation
    seed: int | None = None
    stream: bool = False
    stream_options: dict | None = None     # {"include_usage": true}: a last chunk with the token counts
    user: str | None = None                # an end-user id for the caller's own logs; not used here
    # Accepted only at the value that turns them off: we do not implement them.
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logprobs: bool | int | None = None
    logit_bias: dict | None = None

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, value):
        stops = [value] if isinstance(value, str) else (value or [])
        if any(not s for s in stops) or len(stops) > 4:
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _no_penalty(cls, value):
        if value != 0:
            raise ValueError("is not implemented by this server; leave it at 0")
        return value

    @field_validator("logprobs", "logit_bias")
    @classmethod
    def _not_implemented(cls, value):
        if value:
            raise ValueError("is not implemented by this server; leave it out")
        return value

    @field_validator("stream_options")
    @classmethod
    def _stream_options(cls, value):
        if value and set(value) - {"include_usage"}:
            raise ValueError("only include_usage is implemented")
        return value


class CompletionBody(Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: Literal[False] = False
    best_of: int | None = None

    @field_validator("prompt")
    @classmethod
    def _some_prompt(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("give at least one prompt")
        return value


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str | list[dict]
    name: str | None = None

    def text(self) -> str:
        """The content as text: a string, or the text parts of a list (other parts are refused)."""
        if isinstance(self.content, str):
            return self.content
        if any(part.get("type") != "text" or not isinstance(part.get("text"), str) for part in self.content):
            raise APIError(400, "only text content parts ({'type': 'text', 'text': ...}) are supported",
                           param="messages")
        return "".join(part["text"] for part in self.content)


class ChatBody(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)   # the newer name of max_tokens


def api_router(served) -> APIRouter:
    """The /v1 routes for `served` (app.Served)."""
    router = APIRouter(prefix="/v1")
    created = int(time.time())

    def model_card() -> dict:
        return {"id": served.name, "object": "model", "created": created, "owned_by": "transformerkit"}

    def check_model(name: str) -> None:
        if name != served.name:
            raise APIError(404, f"the model {name!r} does not exist here; this server serves {served.name!r} "
                                "(GET /v1/models)", param="model", code="model_not_found")

    @router.get("/models")
    async def list_models():
        """The one model this server serves."""
        return {"object": "list", "data": [model_card()]}

    @router.get("/models/{name:path}")
    async def get_model(name: str):
        check_model(name)
        return model_card()

    @router.post("/completions")
    async def completions(body: CompletionBody, request: Request):
        """Continue each prompt n times (OpenAI's legacy completions)."""
        check_model(body.model)
        if body.best_of not in (None, body.n):
            raise APIError(400, "best_of is not implemented (only best_of = n)", param="best_of")
        prompts = body.prompt
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        tokenizer = served.tokenizer
        ids = [tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompts]
        max_tokens = body.max_tokens or COMPLETION_MAX_TOKENS
        requests = [engine_request(body, p, max_tokens, body.stop) for p in ids]
        return await respond(served, request, body, requests, "text_completion")

    @router.post("/chat/completions")
    async def chat_completions(body: ChatBody, request: Request):
        """The assistant's reply to the messages, through the model's chat template (a model without one
        continues a plain transcript, "user: ...\\nassistant:", up to the next "\\nuser:")."""
        check_model(body.model)
        model, tokenizer = served.model, served.tokenizer
        if not model.can_generate or model.is_encoder_decoder:
            raise APIError(400, f"{served.name} is not a decoder-only language model, so it cannot chat; use "
                                "/v1/completions", param="model", code="model_not_chat")
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        template = tokenizer.chat_template is not None
        try:
            prompt = chat_prompt(tokenizer, messages, template=template)
        except TransformerKitError as e:
            raise APIError(400, str(e), param="messages") from None
        ids = tokenizer.encode(prompt, add_special_tokens=False)   # the template writes the special tokens
        max_tokens = body.max_completion_tokens or body.max_tokens
        if max_tokens is None:   # a reply: up to what is left of the context (as tk.chat)
            room = (model.decoder_context or len(ids) + DEFAULT_MAX_NEW_TOKENS) - len(ids)
            max_tokens = max(1, min(DEFAULT_MAX_NEW_TOKENS, room))
        stops = body.stop if template else [*body.stop, TRANSCRIPT_STOP]
        requests = [engine_request(body, ids, max_tokens, stops)]
        return await respond(served, request, body, requests, "chat.completion")

    return router


def engine_request(body: Sampling, ids: list[int], max_tokens: int, stops: list[str]) -> EngineRequest:
    return EngineRequest(prompt_ids=ids, max_new_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                         stop=list(stops), seed=body.seed, n=body.n)


async def respond(served, request: Request, body: Sampling, requests: list[EngineRequest], kind: str):
    """Submit the requests to the engine and answer with one JSON body, or with server-sent events."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    jobs = []
    try:
        for number, engine_request in enumerate(requests):
            engine_request.timeout = served.settings.timeout
            listener = (lambda event, number=number: loop.call_soon_threadsafe(events.put_nowait, (number, event)))
            jobs.append(served.engine.submit(engine_request, listener))
    except QueueFull as e:
        for job in jobs:
            job.cancel()
        raise APIError(429, f"the server is busy: {e}", code="queue_full") from None
    except RequestError as e:
        for job in jobs:
            job.cancel()
        raise APIError(400, str(e), param=REQUEST_PARAMS.get(e.field, e.field), code=e.code) from None
    reply = Reply(kind, served.name, body.n, sum(len(r.prompt_ids) for r in requests), len(requests) * body.n)
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(stream(reply, events, jobs, include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    try:
        while reply.open:
            try:
                number, event = await asyncio.wait_for(events.get(), timeout=1.0)
            except asyncio.TimeoutError:
                if await request.is_disconnected():   # nobody is waiting for the answer any more
                    return JSONResponse({}, status_code=499)
                continue
            reply.add(number, event)
    finally:
        for job in jobs:
            job.cancel()       # a no-op for finished jobs; frees the rows of an abandoned one
    if reply.error is not None:
        raise reply.error
    return reply.whole()


async def stream(reply: Reply, events: asyncio.Queue, jobs, include_usage: bool):
    """Server-sent events: a chunk per piece of text, then each choice's finish_reason, then [DONE].
    Starlette cancels this generator when the client disconnects; `finally` then frees its rows."""
    try:
        if reply.kind == "chat.completion":   # OpenAI's first chat chunk names the role
            for index in range(reply.choices):
                yield sse(reply.chunk(index, {"role": "assistant", "content": ""}, None))
        while reply.open:
            number, event = await events.get()
            index = reply.add(number, event)
            if reply.error is not None:
                yield sse(reply.error.body())
                break
            if event.text or event.finish_reason:
                yield sse(reply.chunk(index, event.text, event.finish_reason))
        if include_usage and reply.error is None:
            yield sse({**reply.header("chunk"), "choices": [], "usage": reply.usage()})
        yield "data: [DONE]\n\n"
    finally:
        for job in jobs:
            job.cancel()


def sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class Reply:
    """One response being assembled from the engine's events: the choices' texts, ends and token counts."""

    def __init__(self, kind: str, model: str, n: int, prompt_tokens: int, choices: int):
        self.kind, self.model, self.n, self.prompt_tokens, self.choices = kind, model, n, prompt_tokens, choices
        self.id = ("chatcmpl-" if kind == "chat.completion" else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.texts, self.finish, self.tokens = [""] * choices, [None] * choices, [0] * choices
        self.error: APIError | None = None

    @property
    def open(self) -> bool:
        return self.error is None and any(f is None for f in self.finish)

    def add(self, number: int, event) -> int:
        """Take an event of request `number`; return the choice index it belongs to."""
        index = number * self.n + event.index
        self.texts[index] += event.text
        if event.finish_reason == "timeout":
            self.error = APIError(504, "the request took longer than the server's timeout (tkit serve --timeout)",
                                  code="timeout")
        elif event.finish_reason == "error":
            self.error = APIError(500, f"decoding failed: {event.error}", code="decoding_failed")
        elif event.finish_reason is not None:
            self.finish[index] = event.finish_reason
            self.tokens[index] = event.completion_tokens
        return index

    def usage(self) -> dict:
        completion = sum(self.tokens)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion}

    def header(self, suffix: str = "") -> dict:
        kind = self.kind + ("." + suffix if suffix else "")
        return {"id": self.id, "object": kind if self.kind == "chat.completion" else "text_completion",
                "created": self.created, "model": self.model}

    def whole(self) -> dict:
        if self.kind == "chat.completion":
            choices = [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": end,
                        "logprobs": None} for i, (text, end) in enumerate(zip(self.texts, self.finish))]
        else:
            choices = [{"index": i, "text": text, "finish_reason": end, "logprobs": None}
                       for i, (text, end) in enumerate(zip(self.texts, self.finish))]
        return {**self.header(), "choices": choices, "usage": self.usage()}

    def chunk(self, index: int, content, finish_reason: str | None) -> dict:
        if self.kind == "chat.completion":
            delta = content if isinstance(content, dict) else ({"content": content} if content else {})
            choice = {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        else:
            choice = {"index": index, "text": content, "finish_reason": finish_reason, "logprobs": None}
        return {**self.header("chunk"), "choices": [choice]}
