"""uvicorn's HTTP protocol with a limit on the size of a request's head.

httptools, uvicorn's default parser, buffers a request line and headers of any
size: one client could make the process hold gigabytes before the application
sees a thing. This subclass counts the head as it arrives and answers 431 as
soon as it passes `max_header_bytes`. Without httptools, uvicorn's h11
protocol applies `h11_max_incomplete_event_size` instead (answering 400).
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


def _refusal(max_header_bytes: int) -> bytes:
    body = json.dumps({
        "error": f"request line and headers are over the limit of {max_header_bytes} bytes"
    }).encode()
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


if HttpToolsProtocol is not None:

    class HeaderLimitedProtocol(HttpToolsProtocol):  # type: ignore[misc, valid-type]
        """httptools protocol that refuses heads over `max_header_bytes` with 431."""

        max_header_bytes = 64 * 1024

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_open = True
            self._head_received = 0
            self._head_parsed = 0
            self._refused = False

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._head_open:
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

        def _refuse(self) -> None:
            if self._refused:
                return
            self._refused = True
            logger.debug("refused a request head over %d bytes", self.max_header_bytes)
            self.transport.write(_refusal(self.max_header_bytes))
            self.transport.close()


def protocol_with_header_limit(max_header_bytes: int) -> type[asyncio.Protocol] | str:
    """The uvicorn `http` setting that enforces `max_header_bytes`."""
    if HttpToolsProtocol is None:
        return "h11"
    return type(
        "HeaderLimitedProtocol", (HeaderLimitedProtocol,), {"max_header_bytes": max_header_bytes}
    )


__all__ = ["protocol_with_header_limit"]
