"""ASGI middleware: request ids, per-request metrics, API key, draining.

Written against raw ASGI rather than Starlette's BaseHTTPMiddleware, which
costs a task and a memory stream per request: on ResNet-20 the whole forward
pass takes about half a millisecond, so per-request overhead shows.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.api.disconnect import CLIENT_CLOSED_REQUEST, DisconnectWatch
from service.logging import model_var, request_id_var

logger = logging.getLogger(__name__)

OPEN_PATHS = ("/health", "/metrics", "/v2/health", "/docs", "/openapi.json", "/static")
_MAX_REQUEST_ID = 128


class ServiceMiddleware:
    """Every request: id in and out, API key, drain refusal, metrics."""

    def __init__(
        self,
        app: ASGIApp,
        configured_models: Callable[[], set[str]],
        api_key: str | None = None,
        is_draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.app = app
        self.configured_models = configured_models
        self.api_key = hashlib.sha256(api_key.encode()).digest() if api_key else None
        self.is_draining = is_draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        request_id = _request_id(scope)
        request_id_var.set(request_id)
        status = 500
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], id_header]
            await send(message)

        path: str = scope["path"]
        watch = DisconnectWatch(receive, send_with_id)
        try:
            refusal = self._refusal(scope, path)
            if refusal is not None:
                await _send_json(send_with_id, *refusal)
            else:
                await self._run(scope, watch, send_with_id)
        finally:
            if watch.client_gone:
                status = CLIENT_CLOSED_REQUEST
            self._record(scope, status, time.perf_counter() - started)

    async def _run(self, scope: Scope, watch: DisconnectWatch, send: Send) -> None:
        try:
            await watch.run(self.app(scope, watch.receive, watch.send))
        except asyncio.CancelledError:
            # Once the shutdown grace period is over, uvicorn cancels what
            # still runs and would answer a plain-text 500; the client is told
            # what happened instead, in the service's own shape.
            task = asyncio.current_task()
            if watch.responding or not self.is_draining() or task is None:
                raise
            task.uncancel()
            logger.warning("shutdown grace period over: %s %s cut short",
                           scope["method"], scope["path"])
            await _send_json(send, 503, "the service shut down before this request "
                             "finished", {"Retry-After": "5", "Connection": "close"})

    def _refusal(self, scope: Scope, path: str) -> tuple[int, str, dict[str, str]] | None:
        if path == "/" or path.startswith(OPEN_PATHS):
            return None
        if self.is_draining():
            return 503, "the service is shutting down", {"Retry-After": "5", "Connection": "close"}
        if self.api_key is not None and not self._authorised(scope):
            return 401, "missing or wrong API key (Authorization: Bearer <key>)", {
                "WWW-Authenticate": "Bearer"
            }
        return None

    def _authorised(self, scope: Scope) -> bool:
        assert self.api_key is not None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    # Digests of equal length, so the comparison time does not
                    # even tell the key's length.
                    given = hashlib.sha256(token.strip()).digest()
                    return hmac.compare_digest(given, self.api_key)
        return False

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "path_format", None) or getattr(route, "path", None)
        if endpoint is None:
            endpoint = "unmatched"
        name = scope.get("path_params", {}).get("model")
        if name is None:
            model = ""
        elif name in self.configured_models():
            model = name
        else:
            model = metrics.UNKNOWN_MODEL
        network = scope.get("state", {}).get("network", "none")
        metrics.REQUESTS.labels(model, endpoint, str(status), network).inc()
        metrics.REQUEST_DURATION.labels(model, endpoint, network).observe(seconds)
        model_var.set(model or "-")
        logger.debug("%s %s -> %d in %.2f ms", scope["method"], scope["path"], status,
                     seconds * 1000)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1").strip()
            if text and len(text) <= _MAX_REQUEST_ID and text.isprintable():
                return text
    return uuid.uuid4().hex


async def _send_json(send: Send, status: int, message: str, headers: dict[str, str]) -> None:
    body = json.dumps({"error": message}).encode()
    raw_headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["ServiceMiddleware"]
