"""The application factory: routes, error handling, lifespan (load, drain, close)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import __version__
from service.api.errors import ErrorBody, error_response, install_error_handlers
from service.api.middleware import ServiceMiddleware
from service.api.routes_v1 import build_router
from service.api.routes_v2 import build_v2_router
from service.api.routes_web import build_web_router
from service.api.schemas import HealthResponse
from service.registry import ModelRegistry
from service.settings import Settings

logger = logging.getLogger(__name__)


class ServiceState:
    """What the lifespan, health checks and shutdown share."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = ModelRegistry(settings)
        self.draining = False


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service; models load in the lifespan, before readiness."""
    settings = settings or Settings()
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.registry.load_all()
        logger.info("ready: %d model(s) loaded", len(state.registry.all()))
        try:
            yield
        finally:
            await drain(state)
            await state.registry.close()
            logger.info("stopped")

    app = FastAPI(
        title="resnet-serve",
        version=__version__,
        description="Classification with residual networks, and with any of "
        "their sub-networks of removed blocks.",
        lifespan=lifespan,
    )
    app.state.service = state
    install_error_handlers(app)
    app.include_router(build_router(state.registry, settings))
    app.include_router(build_v2_router(state.registry, settings))
    app.include_router(build_web_router(state.registry, settings))
    _add_health_and_metrics(app, state)

    app.add_middleware(
        ServiceMiddleware,
        configured_models=state.registry.configured_names,
        api_key=settings.api_key,
        is_draining=lambda: state.draining,
    )
    if settings.cors_origins:
        # Outermost, added last: preflights carry no credentials, so they are
        # answered before the API key is asked for, and refusals (a 401 too)
        # carry the CORS headers that let a page read them.
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"], allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    return app


async def drain(state: ServiceState) -> None:
    """Refuse new requests and let accepted ones finish, within the grace period."""
    state.draining = True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.settings.shutdown_grace_s
    while state.registry.busy() and loop.time() < deadline:
        await asyncio.sleep(0.01)


def _add_health_and_metrics(app: FastAPI, state: ServiceState) -> None:
    @app.get("/health/live", response_model=HealthResponse, tags=["health"])
    async def live() -> dict[str, str]:
        """200 while the process serves HTTP."""
        return {"status": "live"}

    @app.get(
        "/health/ready", response_model=HealthResponse, tags=["health"],
        responses={503: {"model": ErrorBody, "description": "Not ready: loading or draining"}},
    )
    async def ready() -> Any:
        """200 once every configured model is loaded and warmed up."""
        if state.draining:
            return error_response(503, "the service is shutting down")
        if not state.registry.ready:
            return error_response(503, "models are still loading")
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
