"""Response bodies of /v1, for validation and the OpenAPI schema."""

from __future__ import annotations

from pydantic import BaseModel


class ClassScore(BaseModel):
    class_id: int
    label: str
    probability: float


class Prediction(BaseModel):
    """One image's top-k classes, most probable first."""

    top: list[ClassScore]


class ClassifyResponse(BaseModel):
    model: str
    version: str
    predictions: list[Prediction]


class RemovedBlock(BaseModel):
    index: int
    name: str


class SubnetworkResponse(ClassifyResponse):
    removed_blocks: list[RemovedBlock]
    #: "pruned" when a graph without the blocks ran, "masked" when the full
    #: graph ran with the blocks' branches gated off.
    graph: str


class ModelSummary(BaseModel):
    name: str
    version: str
    dataset: str
    architecture: str
    num_blocks: int
    pretrained: bool
    provider: str
    ready: bool


class ModelsResponse(BaseModel):
    models: list[ModelSummary]


class HealthResponse(BaseModel):
    status: str
