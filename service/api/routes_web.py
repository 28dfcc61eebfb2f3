"""The web page at `/`, its static files, and the image as a model sees it.

The page is plain HTML, CSS and ES modules under `service/static/`: nothing
to build and nothing fetched from another host, so it works offline.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from models.manifest import Preprocessing
from models.preprocessing import (
    ImageTooLargeError,
    InvalidImageError,
    decode_image,
    resize_and_crop,
)
from service.api.errors import error_responses
from service.api.inputs import read_images
from service.api.routes_v1 import IMAGE_BODY, request_deadline
from service.errors import InvalidInputError, PayloadTooLargeError
from service.registry import ModelRegistry
from service.settings import Settings

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

# Everything the page loads comes from this origin; `blob:` covers the
# previews of the user's own image and of the preprocessed PNG.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-cache",
}
PNG_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "The model's view, as PNG"}
}


def model_view_png(data: bytes, spec: Preprocessing, max_pixels: int) -> bytes:
    """The decoded image resized and cropped as the model's input, encoded as PNG.

    Raises:
        InvalidInputError: the bytes are not a usable image.
        PayloadTooLargeError: the image has more than `max_pixels` pixels.
    """
    try:
        image = decode_image(data, max_pixels)
    except ImageTooLargeError as exc:
        raise PayloadTooLargeError(str(exc)) from None
    except InvalidImageError as exc:
        raise InvalidInputError(str(exc)) from None

    # decode_image has already made it 8-bit RGB (to_rgb), as the model gets it.
    view = resize_and_crop(image, spec)
    buffer = io.BytesIO()
    view.save(buffer, format="PNG")
    return buffer.getvalue()


def build_web_router(registry: ModelRegistry, settings: Settings) -> APIRouter:
    """`/` (the page), `/static/*`, and `POST /v1/models/{model}/preprocess`."""
    router = APIRouter()
    router.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @router.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    @router.post(
        "/v1/models/{model}/preprocess",
        tags=["v1"],
        response_class=Response,
        responses={**PNG_RESPONSE, **error_responses(400, 401, 404, 408, 413, 415, 422, 503)},
        openapi_extra=IMAGE_BODY,
    )
    async def preprocess(request: Request, model: str) -> Response:
        """One image resized and cropped exactly as the model's input, as PNG.

        Normalisation (mean and std) is left out: it would not be viewable.
        """
        loaded = registry.get(model)
        deadline = request_deadline(request, settings)
        images = await read_images(request, settings.max_body_bytes, 1, deadline)
        png = await asyncio.to_thread(
            model_view_png, images[0], loaded.runtime.preprocessing, settings.max_image_pixels
        )
        return Response(png, media_type="image/png")

    return router
