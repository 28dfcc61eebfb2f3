"""Service configuration from `RESNET_SERVE_*` environment variables.

Built once at start-up and passed to `create_app`, so tests build their own.
Per-model batching overrides come from the JSON file named
by `RESNET_SERVE_MODEL_CONFIG`, because model names contain dashes, which
environment variable names cannot.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

logger = logging.getLogger(__name__)

DEFAULT_MODELS = ["resnet20-cifar10", "resnet56-cifar10"]
ENV_PREFIX = "RESNET_SERVE_"


class ConfigurationError(ValueError):
    """Settings that cannot be used; the message names each bad variable."""


def available_cpus() -> int:
    """CPUs this process may use: affinity mask and cgroup CPU quota both count."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


class BatchingConfig(BaseModel):
    """Dynamic batching of one model's queue."""

    # Also the schema of each model's entry in MODEL_CONFIG, where a misspelt
    # key would otherwise leave the global value in force without a word.
    # Strict: JSON's `true` would otherwise pass as the number 1.
    model_config = ConfigDict(extra="forbid", strict=True)

    max_batch_size: int = Field(32, ge=1, le=4096)
    max_queue_delay_ms: float = Field(2.0, ge=0, le=10_000, allow_inf_nan=False)
    max_queue_size: int = Field(1024, ge=1)


class ModelRef(BaseModel):
    """`name` or `name:version` from `RESNET_SERVE_MODELS`."""

    name: str
    version: int | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, _, version = text.strip().partition(":")
        if not name:
            raise ValueError(f"empty model name in {text!r}")
        if version and not version.isdigit():
            raise ValueError(f"model version must be an integer in {text!r}")
        return cls(name=name, version=int(version) if version else None)


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every setting of the service; the README's configuration table mirrors this."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, le=65535)
    #: Models to serve, `name` or `name:version`, comma-separated.
    models: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_MODELS))
    model_repository: Path = Path("models/repository")
    cache_dir: Path | None = None
    weights_mirror: str | None = None
    #: ONNX Runtime execution providers in order of preference.
    providers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    #: Threads of each ONNX Runtime session; 0 means the CPUs this process may use.
    intra_op_threads: int = Field(0, ge=0)
    max_batch_size: int = Field(32, ge=1, le=4096)
    max_queue_delay_ms: float = Field(2.0, ge=0, le=10_000, allow_inf_nan=False)
    max_queue_size: int = Field(1024, ge=1)
    model_config_file: Path | None = Field(None, validation_alias="RESNET_SERVE_MODEL_CONFIG")
    request_timeout_s: float = Field(30.0, gt=0, allow_inf_nan=False)
    max_body_bytes: int = Field(20 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_images_per_request: int = Field(64, ge=1)
    #: Largest request line plus headers, in bytes; beyond it the answer is 431.
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    #: Deepest nesting of arrays and objects in a JSON body; beyond it, 400.
    max_json_depth: int = Field(32, ge=2, le=1000)
    subnetwork_cache_size: int = Field(8, ge=0)
    subnetwork_prune_after: int = Field(3, ge=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    api_key: str | None = None
    drain_delay_s: float = Field(1.0, ge=0, allow_inf_nan=False)
    shutdown_grace_s: float = Field(30.0, ge=0, allow_inf_nan=False)

    #: Each model's entry in MODEL_CONFIG, checked when the settings are built.
    _overrides: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)
    _warned_unconfigured: bool = PrivateAttr(False)

    _split = field_validator("models", "providers", "cors_origins", mode="before")(
        _split_commas
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_models(self) -> Settings:
        if not self.models:
            raise ValueError("RESNET_SERVE_MODELS names no model")
        for text in self.models:
            ModelRef.parse(text)
        return self

    @model_validator(mode="after")
    def _check_model_config(self) -> Settings:
        self._overrides = self._read_overrides()
        for model, entry in self._overrides.items():
            try:
                BatchingConfig(**{**self._global_batching(), **entry})
            except ValidationError as exc:
                problems = "; ".join(_describe_override_error(e) for e in exc.errors())
                raise ValueError(
                    f"RESNET_SERVE_MODEL_CONFIG={self.model_config_file}: model "
                    f"{model!r}: {problems}"
                ) from None
        return self

    @classmethod
    def from_environment(cls) -> Settings:
        """Settings from the `RESNET_SERVE_*` environment variables.

        Raises:
            ConfigurationError: one line per bad variable, naming its value
                and what is expected.
        """
        try:
            return cls()
        except ValidationError as exc:
            lines = [f"  {_describe_setting_error(error)}" for error in exc.errors()]
            raise ConfigurationError("invalid configuration:\n" + "\n".join(lines)) from None

    @property
    def threads(self) -> int:
        return self.intra_op_threads or available_cpus()

    def model_refs(self) -> list[ModelRef]:
        return [ModelRef.parse(text) for text in self.models]

    def batching_for(self, model: str) -> BatchingConfig:
        """Global batching settings with the model's overrides from MODEL_CONFIG."""
        self._warn_unconfigured_overrides()
        return BatchingConfig(**{**self._global_batching(), **self._overrides.get(model, {})})

    def _global_batching(self) -> dict[str, Any]:
        return {
            "max_batch_size": self.max_batch_size,
            "max_queue_delay_ms": self.max_queue_delay_ms,
            "max_queue_size": self.max_queue_size,
        }

    def _warn_unconfigured_overrides(self) -> None:
        # Logged when the overrides are first applied, at start-up, not when the
        # settings are built: the CLI sets up logging only after that.
        if self._warned_unconfigured:
            return
        self._warned_unconfigured = True
        served = {ref.name for ref in self.model_refs()}
        unused = sorted(set(self._overrides) - served)
        if unused:
            logger.warning(
                "RESNET_SERVE_MODEL_CONFIG=%s has settings for %s, which RESNET_SERVE_MODELS "
                "does not name (%s); they are not used",
                self.model_config_file, ", ".join(unused), ", ".join(sorted(served)),
            )

    def _read_overrides(self) -> dict[str, dict[str, Any]]:
        if self.model_config_file is None:
            return {}
        try:
            data = json.loads(self.model_config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"cannot read RESNET_SERVE_MODEL_CONFIG={self.model_config_file}: {exc}"
            ) from exc
        models = data.get("models", data) if isinstance(data, dict) else None
        if not isinstance(models, dict) or not all(
            isinstance(entry, dict) for entry in models.values()
        ):
            raise ValueError(
                f"RESNET_SERVE_MODEL_CONFIG={self.model_config_file} must map model names "
                "to objects of batching settings"
            )
        return models


def _describe_setting_error(error: ErrorDetails) -> str:
    """`RESNET_SERVE_PORT='abc': Input should be a valid integer...` for one error."""
    message = _error_message(error)
    if not error["loc"]:
        return message
    field = str(error["loc"][0])
    # Aliased fields are reported under their alias, already a variable name.
    variable = ENV_PREFIX + field if field in Settings.model_fields else field
    return f"{variable.upper()}={error['input']!r}: {message}"


def _describe_override_error(error: ErrorDetails) -> str:
    key = ".".join(map(str, error["loc"]))
    if error["type"] == "extra_forbidden":
        known = ", ".join(BatchingConfig.model_fields)
        return f"unknown key {key!r} (known: {known})"
    return f"{key}={error['input']!r}: {_error_message(error)}"


def _error_message(error: ErrorDetails) -> str:
    # pydantic prefixes a validator's own ValueError with "Value error, ".
    cause = error.get("ctx", {}).get("error")
    if error["type"] == "value_error" and cause is not None:
        return str(cause)
    return error["msg"]
