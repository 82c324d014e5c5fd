"""The settings of `tkit serve` (kept apart from the ASGI app, so the CLI reads its defaults without
importing the web stack)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ServeSettings:
    """How `tkit serve` runs. The defaults are the safe ones: loopback only, no key needed there, CORS off."""
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None           # set: /v1 and /api need "Authorization: Bearer KEY" (401 otherwise)
    max_batch: int = 8                   # rows decoded together in one step
    max_queue: int = 64                  # requests waiting for a row; one more is answered 429
    timeout: float = 300.0               # seconds a request may take, waiting included (504 after)
    max_body_bytes: int = 1 << 20        # a larger request body is answered 413
    cors_origins: list[str] = field(default_factory=list)   # browser origins allowed to call the API; none: CORS off
