"""The service's exceptions, free of FastAPI; `service.api.errors` maps them to HTTP."""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: `message` is safe to show to clients."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(ServiceError):
    """The request is malformed or carries unusable data (a client mistake)."""


class InvalidParameterError(InvalidInputError):
    """A query or protocol parameter has a bad value (`/v1` answers 422)."""


class UnsupportedMediaTypeError(InvalidInputError):
    """The request body has a content type this endpoint does not take."""


class PayloadTooLargeError(InvalidInputError):
    """Body, image or image count over its configured limit."""


class RequestTimeoutError(InvalidInputError):
    """The client did not send its whole request before the request's deadline."""


class ModelNotFoundError(ServiceError):
    """No such model, or no such version of it, is loaded."""


class ModelNotReadyError(ServiceError):
    """The model exists but is still loading or warming up."""


class OverloadedError(ServiceError):
    """The model's queue is full, or the service is draining; retry later."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceededError(ServiceError):
    """The request's deadline passed before it could run."""


class InferenceFailedError(ServiceError):
    """ONNX Runtime failed while running the batch that held this request."""


class UnauthorizedError(ServiceError):
    """Missing or wrong API key."""
