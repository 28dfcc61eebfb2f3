"""Our own API under /v1: classify, classify a sub-network, model metadata."""

from __future__ import annotations

import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request

from service import metrics
from service.api.errors import error_responses
from service.api.inputs import preprocess_images, read_images
from service.api.schemas import (
    ClassifyResponse,
    ModelSummary,
    ModelsResponse,
    SubnetworkResponse,
)
from service.errors import InvalidParameterError
from service.registry import LoadedModel, ModelRegistry, RowResult
from service.runtime.model import RemovedSet
from service.settings import Settings

IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        }
                    },
                    "required": ["file"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

TopK = Annotated[
    int,
    Query(ge=1, le=100_000, description="Classes per image; more than the model has "
          "means all of them."),
]
Remove = Annotated[
    list[str] | None,
    Query(description="Comma-separated block indices and/or names to remove, "
          "e.g. `3,layer2.0`; empty removes none. May be repeated: "
          "`remove=3&remove=layer2.0` is the same."),
]


def request_deadline(request: Request, settings: Settings) -> float:
    """Monotonic deadline: the configured timeout, or less if the client asks."""
    timeout_s = settings.request_timeout_s
    asked = request.headers.get("x-request-timeout")
    if asked:
        try:
            value = float(asked)
        except ValueError:
            raise InvalidParameterError(
                f"X-Request-Timeout must be a number of seconds, got {asked!r}"
            ) from None
        if not value > 0 or value != value:
            raise InvalidParameterError(f"X-Request-Timeout must be positive, got {asked!r}")
        timeout_s = min(timeout_s, value)
    return time.monotonic() + timeout_s


def parse_remove(model: LoadedModel, remove: str | list[str] | None) -> RemovedSet:
    """`remove` as a comma-separated string (or a list of items) to block indices."""
    if remove is None:
        return frozenset()
    if isinstance(remove, str):
        if not remove.strip():
            return frozenset()
        items: list[str] = remove.split(",")
    else:
        items = [str(item) for item in remove]
    return model.resolve_blocks(items)


def top_predictions(row: RowResult, labels: list[str], top_k: int) -> list[dict[str, Any]]:
    k = min(top_k, len(labels))
    probabilities = row.probabilities
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [
        {"class_id": int(i), "label": labels[i], "probability": float(probabilities[i])}
        for i in order
    ]


def build_router(registry: ModelRegistry, settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["v1"])

    async def classify(
        request: Request, model_name: str, top_k: int, remove: list[str] | None, sub: bool
    ) -> dict[str, Any]:
        model = registry.get(model_name)
        # An empty `remove` means none, repeated or not; `3,,4` inside one
        # value is still a malformed list.
        removed_text = None if remove is None else ",".join(v for v in remove if v.strip())
        removed = parse_remove(model, removed_text) if sub else frozenset()
        deadline = request_deadline(request, settings)
        images = await read_images(
            request, settings.max_body_bytes, settings.max_images_per_request, deadline
        )
        tensors = await preprocess_images(
            images, model.runtime.preprocessing, settings.max_image_pixels
        )
        rows = await model.infer(tensors, removed, deadline)

        network = "subnetwork" if sub else "full"
        metrics.IMAGES.labels(model.name, network).inc(len(rows))
        labels = model.runtime.labels
        response: dict[str, Any] = {
            "model": model.name,
            "version": str(model.version),
            "predictions": [{"top": top_predictions(row, labels, top_k)} for row in rows],
        }
        if sub:
            response["removed_blocks"] = model.describe_removed(removed)
            response["graph"] = rows[0].graph
        return response

    @router.get("/models", response_model=ModelsResponse)
    async def list_models() -> dict[str, Any]:
        """The loaded models and whether each is ready."""
        return {"models": [summary(model) for model in registry.all()]}

    @router.get(
        "/models/{model}", responses=error_responses(404, 503),
    )
    async def model_metadata(model: str) -> dict[str, Any]:
        """The export sidecar plus runtime facts (provider, batching settings)."""
        return full_metadata(registry.get(model), settings)

    @router.post(
        "/models/{model}/classify",
        response_model=ClassifyResponse,
        responses=error_responses(400, 404, 408, 413, 415, 422, 500, 503, 504),
        openapi_extra=IMAGE_BODY,
    )
    async def classify_full(request: Request, model: str, top_k: TopK = 5) -> dict[str, Any]:
        """Classify one or more images with the full network."""
        request.state.network = "full"
        if "remove" in request.query_params:
            # Ignoring it would answer for the full network as if blocks were gone.
            raise InvalidParameterError(
                "this route runs the full network and takes no 'remove'; send it to "
                f"/v1/models/{model}/subnetwork/classify"
            )
        return await classify(request, model, top_k, None, sub=False)

    @router.post(
        "/models/{model}/subnetwork/classify",
        response_model=SubnetworkResponse,
        responses=error_responses(400, 404, 408, 413, 415, 422, 500, 503, 504),
        openapi_extra=IMAGE_BODY,
    )
    async def classify_subnetwork(
        request: Request, model: str, top_k: TopK = 5, remove: Remove = None
    ) -> dict[str, Any]:
        """Classify with the chosen residual blocks removed (Veit et al. 2016)."""
        request.state.network = "subnetwork"
        return await classify(request, model, top_k, remove, sub=True)

    return router


def summary(model: LoadedModel) -> dict[str, Any]:
    meta = model.runtime.metadata
    return ModelSummary(
        name=model.name,
        version=str(model.version),
        dataset=meta["dataset"],
        architecture=meta["architecture"]["name"],
        num_blocks=model.runtime.num_blocks,
        pretrained=model.runtime.pretrained,
        provider=model.runtime.provider,
        ready=True,
    ).model_dump()


def full_metadata(model: LoadedModel, settings: Settings) -> dict[str, Any]:
    meta = dict(model.runtime.metadata)
    meta["blocks"] = [
        {key: value for key, value in block.items() if key != "onnx"} for block in meta["blocks"]
    ]
    meta["runtime"] = {
        "provider": model.runtime.provider,
        "providers_requested": settings.providers,
        "intra_op_threads": settings.threads,
        "batching": model.batcher.config.model_dump(),
        "subnetwork_cache_size": settings.subnetwork_cache_size,
        "subnetwork_prune_after": settings.subnetwork_prune_after,
        "load_seconds": round(model.runtime.load_seconds, 3),
    }
    meta["ready"] = True
    return meta
