"""Run the application under uvicorn with a graceful, draining shutdown.

On SIGTERM or SIGINT: readiness turns false and new requests get 503 at once;
after `drain_delay_s` (time for a load balancer to notice) the listener closes;
requests already accepted finish within `shutdown_grace_s`; the process exits 0.
A second signal skips what is left of the drain delay.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

from service.api.app import create_app
from service.protocol import protocol_with_header_limit
from service.settings import Settings

logger = logging.getLogger(__name__)

#: How long before the end of the grace period queued requests are refused.
_GRACE_MARGIN_S = 0.5


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain period between the signal and the close."""

    def __init__(
        self,
        config: uvicorn.Config,
        on_drain_start: Callable[[], None],
        on_grace_end: Callable[[], None],
        drain_delay_s: float,
        grace_s: float,
    ) -> None:
        super().__init__(config)
        self._on_drain_start = on_drain_start
        self._on_grace_end = on_grace_end
        self._drain_delay_s = drain_delay_s
        self._grace_s = grace_s
        self._close_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as a signal handler, between two bytecodes of the event loop's
        # thread: it only sets attributes, and `on_tick` acts on them. It does
        # not call uvicorn's own handler, which records the signal and raises
        # it again after shutdown, so that the process would die of SIGTERM
        # instead of exiting 0.
        if self._close_at is not None:
            self._close_at = time.monotonic()
            return
        self._close_at = time.monotonic() + self._drain_delay_s
        self._on_drain_start()
        logger.info("signal %d: draining for %.1f s, then closing", sig, self._drain_delay_s)

    async def on_tick(self, counter: int) -> bool:
        if self._close_at is not None and time.monotonic() >= self._close_at:
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Shortly before uvicorn gives up on open requests (cancelling them,
        # which answers 500), whatever is still queued is answered 503.
        margin_s = min(_GRACE_MARGIN_S, self._grace_s / 2)
        timer = asyncio.get_running_loop().call_later(
            self._grace_s - margin_s, self._on_grace_end
        )
        try:
            await super().shutdown(sockets)
        finally:
            timer.cancel()


def run_server(settings: Settings) -> int:
    """Serve until a signal; returns the process exit status."""
    app = create_app(settings)
    state = app.state.service
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None,
        http=protocol_with_header_limit(settings.max_header_bytes, settings.request_timeout_s),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_grace_s)),
        access_log=False,
    )

    def start_draining() -> None:
        state.draining = True

    def end_grace() -> None:
        logger.warning("shutdown grace period over: refusing the requests still queued")
        state.registry.reject_queued("the service is shutting down")

    server = DrainingServer(
        config, start_draining, end_grace, settings.drain_delay_s, settings.shutdown_grace_s
    )
    server.run()
    return 0


__all__ = ["DrainingServer", "run_server"]
