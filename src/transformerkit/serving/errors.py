"""Errors as OpenAI's API shapes them: {"error": {"message", "type", "param", "code"}} with an HTTP status,
so every client (the `openai` package included) raises its own exception type for each."""
from __future__ import annotations

from fastapi.responses import JSONResponse

# OpenAI's `type` for each status (the clients read the status; `type` is for people).
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error",
               504: "timeout_error"}


class APIError(Exception):
    """An error a request caused (or met), answered with `status` and an OpenAI-shaped body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": ERROR_TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)
