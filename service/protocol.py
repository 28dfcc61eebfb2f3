"""uvicorn's HTTP protocol with limits on the size and the arrival time of a request's head.

httptools, uvicorn's default parser, buffers a request line and headers of any
size: one client could make the process hold gigabytes before the application
sees a thing. This subclass counts the head as it arrives and answers 431 as
soon as it passes `max_header_bytes`. Without httptools, uvicorn's h11
protocol applies `h11_max_incomplete_event_size` instead (answering 400).

uvicorn's keep-alive timer runs only between requests and stops at a head's
first byte, so a client that connects and sends nothing, or half a head, would
hold its connection for ever. A first head not complete `head_timeout_s` after
the connection opened, and a later one not complete that long after its first
byte, is answered 408 instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

logger = logging.getLogger(__name__)

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional in uvicorn
    HttpToolsProtocol = None


def _refusal(status: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


if HttpToolsProtocol is not None:

    class HeaderLimitedProtocol(HttpToolsProtocol):  # type: ignore[misc, valid-type]
        """httptools protocol that refuses heads over `max_header_bytes` with 431,
        and heads still incomplete `head_timeout_s` after their first byte with 408."""

        max_header_bytes = 64 * 1024
        head_timeout_s = 30.0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_open = True
            self._head_received = 0
            self._head_parsed = 0
            self._head_timer: asyncio.TimerHandle | None = None
            self._refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._start_head_timer()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._head_open:
                if self._head_received == 0 and data and self._head_timer is None:
                    self._start_head_timer()
                self._head_received += len(data)
            super().data_received(data)
            # A head still incomplete after this many bytes sits in the parser's buffers.
            if self._head_open and self._head_received > self.max_header_bytes:
                self._refuse()

        def on_message_begin(self) -> None:
            if self._refused:
                return
            self._head_open = True
            self._head_parsed = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._head_parsed += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_parsed += len(name) + len(value) + 4
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._head_open = False
            self._head_received = 0
            self._cancel_head_timer()
            # A head that arrived whole in one read is measured from what was parsed.
            if self._refused or self._head_parsed > self.max_header_bytes:
                self._refuse()
                return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self._refused:
                return
            self._head_open = True
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

        def _start_head_timer(self) -> None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _refuse(self) -> None:
            limit = self.max_header_bytes
            logger.debug("refused a request head over %d bytes", limit)
            self._close_with(
                "431 Request Header Fields Too Large",
                f"request line and headers are over the limit of {limit} bytes",
            )

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if not self._head_open:
                return
            logger.debug("request head incomplete after %.1f s", self.head_timeout_s)
            self._close_with(
                "408 Request Timeout",
                f"the request line and headers did not arrive within {self.head_timeout_s:g} s",
            )

        def _close_with(self, status: str, message: str) -> None:
            if self._refused:
                return
            self._refused = True
            self._cancel_head_timer()
            self.transport.write(_refusal(status, message))
            self.transport.close()


def protocol_with_header_limit(
    max_header_bytes: int, head_timeout_s: float
) -> type[asyncio.Protocol] | str:
    """The uvicorn `http` setting that enforces `max_header_bytes` and `head_timeout_s`."""
    if HttpToolsProtocol is None:
        return "h11"
    limits = {"max_header_bytes": max_header_bytes, "head_timeout_s": head_timeout_s}
    return type("HeaderLimitedProtocol", (HeaderLimitedProtocol,), limits)


__all__ = ["protocol_with_header_limit"]
