"""The ASGI application of `tkit serve`: the OpenAI-compatible API (api.py), the page (page.py), and what
guards both: an API key, a body-size limit, CORS off unless asked. Routes only parse and answer; the
decoding happens in the library's continuous-batching engine (batching.py), in one thread that owns the
model."""
from __future__ import annotations

import asyncio
import hmac
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..batching import Engine
from .errors import APIError
from .settings import ServeSettings

GUARDED_PREFIXES = ("/v1", "/api")   # what --api-key protects: everything that runs the model


@dataclass
class Served:
    """The one model a server serves, its tokenizer, the name clients call it by, and its engine."""
    model: object
    tokenizer: object
    name: str
    engine: Engine
    settings: ServeSettings

    async def run(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) in the engine's thread, between two decoding steps (one thread uses the model)."""
        return await asyncio.wrap_future(self.engine.call(fn, *args, **kwargs))


def create_app(model, tokenizer, name: str, settings: ServeSettings | None = None) -> FastAPI:
    """The server for one model. The engine thread starts with the app (its lifespan) and stops with it."""
    from .api import api_router
    from .page import page_router

    settings = settings or ServeSettings()
    engine = Engine(model, tokenizer, max_batch=settings.max_batch, max_queue=settings.max_queue)
    served = Served(model, tokenizer, name, engine, settings)

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    # No /docs or /redoc: their pages load scripts from a CDN. The schema itself is at /openapi.json.
    app = FastAPI(title="transformerkit", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.served = served

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        return validation_error(exc).response()

    @app.exception_handler(Exception)
    async def _bug(request, exc: Exception):   # still an OpenAI-shaped body; the server goes on
        return APIError(500, f"the server failed: {type(exc).__name__}: {exc}", code="internal_error").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        return APIError(exc.status_code, str(exc.detail)).response()

    app.include_router(api_router(served))
    app.include_router(page_router(served))
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(Guard, api_key=settings.api_key, max_body_bytes=settings.max_body_bytes)
    return app


def validation_error(exc: RequestValidationError) -> APIError:
    """FastAPI's validation errors as one 400: the first problem, naming the field."""
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return APIError(400, f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})",
                        code="invalid_json")
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    return APIError(400, f"{param or 'body'}: {first.get('msg', 'invalid value')}", param=param)


class Guard:
    """ASGI middleware in front of every route: the API key on /v1 and /api, and the body-size limit
    (the body is read here, up to the limit, and handed on; one byte more is a 413 before any route runs)."""

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.api_key is not None and scope["path"].startswith(GUARDED_PREFIXES) and not self._authorized(scope):
            return await self._refuse(send, APIError(401, "a valid API key is needed: send the header "
                                                          "'Authorization: Bearer KEY' with the server's --api-key",
                                                     code="invalid_api_key"))
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return await self._refuse(send, self._too_large())
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                return await self._refuse(send, self._too_large())
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()    # after the body: wait for the client to go away

        await self.app(scope, replay, send)

    def _authorized(self, scope) -> bool:
        given = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        token = given[7:] if given[:7].lower() == "bearer " else ""
        return hmac.compare_digest(token.encode(), self.api_key.encode())

    def _too_large(self) -> APIError:
        return APIError(413, f"the request body is larger than the server's limit of {self.max_body_bytes} bytes "
                             "(tkit serve --max-body-bytes)", code="body_too_large")

    @staticmethod
    async def _refuse(send, error: APIError) -> None:
        body = json.dumps(error.body()).encode()
        await send({"type": "http.response.start", "status": error.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
