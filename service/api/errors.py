"""Map exceptions to HTTP answers, in one place, with one JSON shape: {"error": "..."}."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.api.disconnect import CLIENT_CLOSED_REQUEST
from service.api.middleware import OPEN_PATHS
from service.errors import (
    DeadlineExceededError,
    InferenceFailedError,
    InvalidInputError,
    InvalidParameterError,
    ModelNotFoundError,
    ModelNotReadyError,
    OverloadedError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ServiceError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)

logger = logging.getLogger(__name__)

# Most specific first: lookup walks the exception's class hierarchy.
STATUS_BY_ERROR: dict[type[ServiceError], int] = {
    InvalidParameterError: 422,
    UnsupportedMediaTypeError: 415,
    PayloadTooLargeError: 413,
    RequestTimeoutError: 408,
    InvalidInputError: 400,
    UnauthorizedError: 401,
    ModelNotFoundError: 404,
    ModelNotReadyError: 503,
    OverloadedError: 503,
    DeadlineExceededError: 504,
    InferenceFailedError: 500,
}


class ErrorBody(BaseModel):
    """Every non-2xx answer of the service."""

    error: str


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def status_for(error: ServiceError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]  # type: ignore[index]
    return 500


def response_for(error: ServiceError) -> JSONResponse:
    status = status_for(error)
    headers = {}
    if isinstance(error, OverloadedError):
        headers["Retry-After"] = str(error.retry_after_s)
    if isinstance(error, ModelNotReadyError):
        headers["Retry-After"] = "1"
    if isinstance(error, UnauthorizedError):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, RequestTimeoutError):
        # The rest of the body may still be on its way: this connection is spent.
        headers["Connection"] = "close"
    return error_response(status, error.message, headers)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        parts.append(f"{location or 'request'}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    _document_common_errors(app)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        if isinstance(exc, InferenceFailedError):
            logger.error("%s", exc.message)
        return response_for(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.url.path!r}"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path!r}"
        return error_response(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client hung up while sending its body: nobody reads this answer,
        # and it is no fault of ours, so no traceback. The status is what the
        # metrics and the log record (nginx's 499).
        logger.debug("client left during %s %s", request.method, request.url.path)
        return error_response(CLIENT_CLOSED_REQUEST, "the client closed the connection")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error")


#: OpenAPI `responses` entries for the errors each route can give.
def error_responses(*codes: int) -> dict[int | str, dict[str, object]]:
    descriptions = {
        400: "Corrupt, truncated, empty or non-image input",
        401: "Missing or wrong API key",
        404: "Unknown model or version",
        408: "The request did not arrive before its deadline",
        413: "Body, image or image count over the configured limit",
        415: "Unsupported content type",
        422: "Invalid query parameter",
        500: "Inference failed in ONNX Runtime",
        503: "Queue full, model loading, or service draining (see Retry-After)",
        504: "Deadline passed while queued",
    }
    return {code: {"model": ErrorBody, "description": descriptions[code]} for code in codes}


#: What the middleware may answer on any route outside `OPEN_PATHS`.
_MIDDLEWARE_ERRORS = (401, 503)
_FASTAPI_VALIDATION_REF = "#/components/schemas/HTTPValidationError"


def _document_common_errors(app: FastAPI) -> None:
    """Declare in the OpenAPI schema the errors that no route declares itself.

    The middleware refuses requests before any route runs (API key, draining),
    and every route that names a model answers 404 for an unknown one; the
    schema says so for each operation, so that clients and fuzzers can rely on it.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _add_common_errors(build())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_common_errors(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("ErrorBody", ErrorBody.model_json_schema())
    _document_validation_errors(schema)
    descriptions = error_responses(401, 404, 503)
    for path, operations in schema.get("paths", {}).items():
        if path == "/" or path.startswith(OPEN_PATHS):
            continue
        codes = [*_MIDDLEWARE_ERRORS, 404] if "{model}" in path else list(_MIDDLEWARE_ERRORS)
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(str(code), {
                    "description": descriptions[code]["description"],
                    "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/ErrorBody"}
                    }},
                })


def _document_validation_errors(schema: dict[str, Any]) -> None:
    """Give FastAPI's own 422 entries the shape `_validation_error` really answers.

    FastAPI documents a 422 of `{"detail": [...]}` on every operation with
    parameters; ours answer `{"error": "..."}` like every other error.
    """
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422", {})
            media = answer.get("content", {}).get("application/json", {})
            if media.get("schema") == {"$ref": _FASTAPI_VALIDATION_REF}:
                media["schema"] = {"$ref": "#/components/schemas/ErrorBody"}

    components = schema["components"]["schemas"]
    if _FASTAPI_VALIDATION_REF not in json.dumps(schema):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
