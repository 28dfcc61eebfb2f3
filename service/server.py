"""Run the application under uvicorn with a graceful, draining shutdown.

On SIGTERM or SIGINT: readiness turns false and new requests get 503 at once;
after `drain_delay_s` (time for a load balancer to notice) the listener closes;
requests already accepted finish within `shutdown_grace_s`; the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType

import uvicorn

from service.api.app import create_app
from service.settings import Settings

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a drain period between the signal and the close."""

    def __init__(self, config: uvicorn.Config, on_drain_start: object) -> None:
        super().__init__(config)
        self._on_drain_start = on_drain_start
        self._drain_delay_s = 0.0
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining:
            # A second signal means "now": skip what is left of the drain delay.
            super().handle_exit(sig, frame)
            return
        self._draining = True
        logger.info("signal %d: draining for %.1f s, then closing", sig, self._drain_delay_s)
        callback = self._on_drain_start
        assert callable(callback)
        callback()
        loop = asyncio.get_event_loop()
        loop.call_later(self._drain_delay_s, super().handle_exit, sig, frame)


def run_server(settings: Settings) -> int:
    """Serve until a signal; returns the process exit status."""
    app = create_app(settings)
    state = app.state.service
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
        access_log=False,
    )

    def start_draining() -> None:
        state.draining = True

    server = DrainingServer(config, start_draining)
    server._drain_delay_s = settings.drain_delay_s
    server.run()
    return 0


__all__ = ["DrainingServer", "run_server"]
