"""Stop working on a request once its client has gone.

Neither uvicorn nor Starlette cancels a handler when the client disconnects:
the handler runs on, and its images would still go through the model for an
answer that nobody reads. Once the handler has read the whole body, the next
`receive()` only returns when the connection drops (or the response is done),
so one watcher task per request waits there and cancels the handler if the
client left before the answer started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from starlette.types import Message, Receive, Send

#: The status recorded for a request whose client left (nginx's convention).
CLIENT_CLOSED_REQUEST = 499


class DisconnectWatch:
    """Wraps one request's `receive` and `send`; `run` the handler through it."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._handler = asyncio.current_task()
        self._watcher: asyncio.Task[None] | None = None
        self.responding = False
        self.client_gone = False

    async def receive(self) -> Message:
        message = await self._receive()
        body_done = message["type"] == "http.request" and not message.get("more_body")
        if body_done and self._watcher is None and self._handler is not None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.responding = True
        await self._send(message)

    async def run(self, handler: Awaitable[None]) -> None:
        """Await the handler; a cancellation that came from the watcher ends it quietly."""
        try:
            await handler
        except asyncio.CancelledError:
            if not self.client_gone or self._handler is None:
                raise
            self._handler.uncancel()
        finally:
            if self._watcher is not None:
                self._watcher.cancel()

    async def _watch(self) -> None:
        message = await self._receive()
        if message["type"] == "http.disconnect" and not self.responding:
            self.client_gone = True
            assert self._handler is not None
            self._handler.cancel()


__all__ = ["CLIENT_CLOSED_REQUEST", "DisconnectWatch"]
