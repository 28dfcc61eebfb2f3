"""Settings from the environment and the per-model MODEL_CONFIG file: what is
taken, and how a mistake is reported."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from service.settings import ConfigurationError, Settings

SERVED = "resnet20-cifar10"

# Settings read the environment: the shell running the tests must not leak in.
pytestmark = pytest.mark.usefixtures("clean_environment")


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where RESNET_SERVE_MODEL_CONFIG points; each test writes it."""
    path = tmp_path / "models.json"
    monkeypatch.setenv("RESNET_SERVE_MODEL_CONFIG", str(path))
    return path


def _with_model_config(path: Path, content: dict[str, Any]) -> Settings:
    path.write_text(json.dumps(content), encoding="utf-8")
    return Settings(models=[SERVED], max_batch_size=8)


def test_model_config_overrides_the_global_batching(config_file: Path) -> None:
    settings = _with_model_config(config_file, {SERVED: {"max_queue_delay_ms": 5}})
    config = settings.batching_for(SERVED)
    assert (config.max_batch_size, config.max_queue_delay_ms) == (8, 5.0)


def test_model_config_refuses_an_unknown_key(config_file: Path) -> None:
    with pytest.raises(ValueError) as caught:
        _with_model_config(config_file, {SERVED: {"max_batch": 64}})
    message = str(caught.value)
    assert str(config_file) in message and repr(SERVED) in message
    assert "unknown key 'max_batch' (known: max_batch_size," in message


def test_model_config_refuses_a_bad_value_when_built(config_file: Path) -> None:
    with pytest.raises(ValueError, match=r"max_batch_size=0: Input should be greater"):
        _with_model_config(config_file, {SERVED: {"max_batch_size": 0}})


def test_model_config_for_an_unserved_model_is_a_warning_once(
    config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _with_model_config(config_file, {SERVED: {}, "resnet21-cifar10": {}})
    caplog.set_level(logging.WARNING, logger="service.settings")
    settings.batching_for(SERVED)
    settings.batching_for(SERVED)

    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "resnet21-cifar10" in record.getMessage() and "not used" in record.getMessage()


def test_model_config_for_served_models_only_is_silent(
    config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _with_model_config(config_file, {"models": {SERVED: {"max_queue_size": 4}}})
    caplog.set_level(logging.DEBUG, logger="service.settings")
    assert settings.batching_for(SERVED).max_queue_size == 4
    assert not caplog.records


def test_bad_variables_are_named_one_per_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESNET_SERVE_MAX_QUEUE_SIZE", "0")
    monkeypatch.setenv("RESNET_SERVE_PORT", "abc")
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_environment()

    assert str(caught.value).splitlines() == [
        "invalid configuration:",
        (
            "  RESNET_SERVE_PORT='abc': Input should be a valid integer, unable to parse "
            "string as an integer"
        ),
        "  RESNET_SERVE_MAX_QUEUE_SIZE='0': Input should be greater than or equal to 1",
    ]


def test_an_unreadable_model_config_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESNET_SERVE_MODEL_CONFIG", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigurationError, match=r"cannot read RESNET_SERVE_MODEL_CONFIG="):
        Settings.from_environment()
