"""The Open Inference Protocol (KServe v2) REST API under /v2, with the Triton
extensions that Triton's clients and perf_analyzer use.

Every answer except a successful infer is JSON; errors are `{"error": ...}`
with the protocol's status codes (a bad parameter is 400 here, not 422).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response

from service import __version__, metrics
from service.api.errors import error_response, error_responses, response_for
from service.api.inputs import parse_off_loop, preprocess_images, read_body
from service.api.routes_v1 import parse_remove, request_deadline
from service.api.v2_codec import (
    HEADER_LENGTH,
    InferRequest,
    RequestTensor,
    ResponseTensor,
    classify_strings,
    encode_response,
    parse_infer_request,
)
from service.api.v2_models import (
    IMAGE_INPUT,
    OUTPUTS,
    TENSOR_INPUT,
    RequestTimes,
    StatisticsBook,
    model_config,
    model_metadata,
)
from service.errors import (
    InvalidInputError,
    InvalidParameterError,
    PayloadTooLargeError,
    ServiceError,
)
from service.registry import LoadedModel, ModelRegistry, RowResult
from service.runtime.model import RemovedSet
from service.settings import Settings

EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "parameters",
              "statistics"]
_DATATYPES = {TENSOR_INPUT: "FP32", IMAGE_INPUT: "BYTES"}

Handler = Callable[..., Awaitable[Any]]

#: How the infer routes appear in the OpenAPI schema: the body is the
#: protocol's JSON, optionally followed by binary tensor data.
INFER_DOCS: dict[str, Any] = {
    "responses": error_responses(400, 404, 408, 413, 500, 503, 504),
    "openapi_extra": {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object", "required": ["inputs"]}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }}},
}


def _protocol_errors(handler: Handler) -> Handler:
    """Answer service errors as the protocol does: a bad parameter is a 400."""

    @functools.wraps(handler)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except ServiceError as exc:
            response = response_for(exc)
            if isinstance(exc, InvalidParameterError):
                response.status_code = 400
            return response

    return wrapped


def build_v2_router(registry: ModelRegistry, settings: Settings) -> APIRouter:
    """The /v2 routes; `request.app.state.service` says whether the service drains."""
    router = APIRouter(prefix="/v2", tags=["v2"])
    book = StatisticsBook()

    @router.get("")
    async def server_metadata() -> dict[str, Any]:
        """Server name, version and the protocol extensions implemented."""
        return {"name": "resnet-serve", "version": __version__, "extensions": EXTENSIONS}

    @router.get("/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/health/ready")
    async def ready(request: Request) -> Any:
        if request.app.state.service.draining:
            return error_response(503, "the service is shutting down")
        if not registry.ready:
            return error_response(503, "models are still loading")
        return {"ready": True}

    @router.get("/models/stats")
    async def all_stats() -> dict[str, Any]:
        """Triton's statistics extension, every loaded model."""
        return {"model_stats": [book.model_stats(model) for model in registry.all()]}

    @router.get("/models/{model}/stats")
    @router.get("/models/{model}/versions/{version}/stats")
    @_protocol_errors
    async def stats(model: str, version: str | None = None) -> dict[str, Any]:
        return {"model_stats": [book.model_stats(registry.get(model, version))]}

    @router.get("/models/{model}")
    @router.get("/models/{model}/versions/{version}")
    @_protocol_errors
    async def metadata(model: str, version: str | None = None) -> dict[str, Any]:
        """Name, versions, platform, inputs and outputs (batch dimension -1)."""
        loaded = registry.get(model, version)
        versions = [loaded.version] if version is not None else sorted(
            other.version for other in registry.all() if other.name == loaded.name
        )
        return model_metadata(loaded, versions)

    @router.get("/models/{model}/ready")
    @router.get("/models/{model}/versions/{version}/ready")
    @_protocol_errors
    async def model_ready(model: str, version: str | None = None) -> dict[str, Any]:
        loaded = registry.get(model, version)
        return {"name": loaded.name, "version": str(loaded.version), "ready": True}

    @router.get("/models/{model}/config")
    @router.get("/models/{model}/versions/{version}/config")
    @_protocol_errors
    async def config(model: str, version: str | None = None) -> dict[str, Any]:
        """Triton's model configuration (perf_analyzer needs it)."""
        return model_config(registry.get(model, version))

    @router.post("/models/{model}/infer", **INFER_DOCS)
    @router.post("/models/{model}/versions/{version}/infer", **INFER_DOCS)
    @_protocol_errors
    async def infer(request: Request, model: str, version: str | None = None) -> Response:
        """Classify preprocessed tensors (`input`) or encoded images (`image`)."""
        started = time.perf_counter()
        loaded = registry.get(model, version)
        request.state.network = "full"
        try:
            return await _infer(request, loaded, started)
        except ServiceError:
            book.record_failure(loaded, time.perf_counter() - started)
            raise

    async def _infer(request: Request, model: LoadedModel, started: float) -> Response:
        # One deadline for the whole request: it bounds the body's arrival,
        # and the `timeout` parameter inside that body can only shorten it.
        deadline = request_deadline(request, settings)
        body = await read_body(request, settings.max_body_bytes, deadline)
        parse = functools.partial(
            parse_infer_request, header_length=request.headers.get(HEADER_LENGTH),
            datatypes=_DATATYPES, max_depth=settings.max_json_depth,
        )
        parsed = await parse_off_loop(body, parse)
        removed = _removed(model, parsed.parameters.get("remove"))
        deadline = _shortened(deadline, parsed.parameters.get("timeout"))
        tensors = await _model_inputs(model, parsed.inputs, settings)

        queued = time.perf_counter()
        rows = await model.infer(tensors, removed, deadline)

        encoding = time.perf_counter()
        network = "subnetwork" if removed else "full"
        request.state.network = network
        metrics.IMAGES.labels(model.name, network).inc(len(rows))
        header: dict[str, Any] = {"model_name": model.name, "model_version": str(model.version)}
        if parsed.id is not None:
            header["id"] = parsed.id
        if removed:
            header["parameters"] = {
                "remove": ",".join(map(str, sorted(removed))), "graph": rows[0].graph,
            }
        content, headers = encode_response(header, _outputs(model, rows, parsed))
        done = time.perf_counter()
        book.record_success(model, RequestTimes(
            total_s=done - started, input_s=queued - started,
            batcher_s=encoding - queued, output_s=done - encoding,
        ))
        return Response(content, headers=headers)

    return router


def _removed(model: LoadedModel, value: Any) -> RemovedSet:
    if value is not None and not isinstance(value, (str, list)):
        raise InvalidParameterError(
            "parameter 'remove' must be a comma-separated string or a list of block "
            f"indices and names, not {value!r}"
        )
    return parse_remove(model, value)


def _shortened(deadline: float, timeout_us: Any) -> float:
    """`deadline`, shortened by Triton's `timeout` parameter (microseconds)."""
    if timeout_us is None:
        return deadline
    if not isinstance(timeout_us, int) or isinstance(timeout_us, bool) or timeout_us <= 0:
        raise InvalidParameterError(
            f"parameter 'timeout' must be a positive number of microseconds, not {timeout_us!r}"
        )
    return min(deadline, time.monotonic() + timeout_us / 1e6)


async def _model_inputs(
    model: LoadedModel, inputs: list[RequestTensor], settings: Settings
) -> list[np.ndarray]:
    """One preprocessed [3, H, W] tensor per row.

    `input` wins when a request carries both: Triton's perf_analyzer fills
    every input the model declares, the optional `image` included.
    """
    by_name = {tensor.name: tensor for tensor in inputs}
    if TENSOR_INPUT in by_name:
        return _tensor_rows(model, by_name[TENSOR_INPUT], settings.max_images_per_request)

    images = by_name[IMAGE_INPUT]
    shape = images.shape
    if not shape or shape[0] == 0 or any(dim != 1 for dim in shape[1:]) or len(shape) > 2:
        raise InvalidInputError(
            f"input 'image' must have shape [N] or [N, 1] with N >= 1, not {shape}"
        )
    _check_count(shape[0], settings.max_images_per_request)
    assert isinstance(images.values, list)
    return await preprocess_images(
        images.values, model.runtime.preprocessing, settings.max_image_pixels
    )


def _tensor_rows(model: LoadedModel, tensor: RequestTensor, limit: int) -> list[np.ndarray]:
    expected = list(model.runtime.input_shape)
    if len(tensor.shape) != 4 or tensor.shape[1:] != expected or tensor.shape[0] == 0:
        raise InvalidInputError(
            f"input 'input' must have shape [N, {', '.join(map(str, expected))}] with "
            f"N >= 1, not {tensor.shape}"
        )
    _check_count(tensor.shape[0], limit)
    assert isinstance(tensor.values, np.ndarray)
    return list(tensor.values.reshape(tensor.shape))


def _check_count(count: int, limit: int) -> None:
    if count > limit:
        raise PayloadTooLargeError(f"{count} images in one request; the limit is {limit}")


def _outputs(
    model: LoadedModel, rows: list[RowResult], parsed: InferRequest
) -> list[ResponseTensor]:
    values = {
        "logits": np.stack([row.logits for row in rows]),
        "probabilities": np.stack([row.probabilities for row in rows]),
    }
    requested = parsed.outputs
    if requested is None:
        return [
            ResponseTensor(name, values[name], list(values[name].shape), parsed.binary_output)
            for name in OUTPUTS
        ]

    tensors = []
    for output in requested:
        if output.name not in values:
            raise InvalidInputError(
                f"unknown output {output.name!r}; this model gives {list(OUTPUTS)}"
            )
        scores = values[output.name]
        binary = output.binary or parsed.binary_output
        if output.classification:
            top = classify_strings(scores, output.classification, model.runtime.labels)
            shape = [len(rows), len(top) // len(rows)]
            tensors.append(ResponseTensor(output.name, top, shape, binary))
        else:
            tensors.append(ResponseTensor(output.name, scores, list(scores.shape), binary))
    return tensors

