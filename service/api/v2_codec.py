"""Open Inference Protocol (KServe v2) bodies: read an infer request, write its answer.

Both JSON and Triton's binary tensor data extension: the JSON header is
followed by raw little-endian tensors, its length given by the
`Inference-Header-Content-Length` header and each tensor's by its
`binary_data_size` parameter. BYTES elements are length-prefixed (4 bytes,
little-endian) in binary and base64 strings in JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.api.inputs import check_json_depth
from service.errors import InvalidInputError

HEADER_LENGTH = "inference-header-content-length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"

_LENGTH_PREFIX = struct.Struct("<I")
_FP32_MAX = float(np.finfo(np.float32).max)
# `bool` is a subclass of `int` but not among these: types are compared exactly.
_NUMBER_TYPES = frozenset({int, float})
#: How a JSON value that is not a number is named in an error message.
_JSON_KINDS: dict[type, str] = {
    bool: "booleans (true/false)",
    str: "strings",
    type(None): "null",
    dict: "objects",
    list: "lists of unequal lengths (ragged, not a tensor)",
}


@dataclass
class RequestTensor:
    """One entry of `inputs`, its data decoded (numbers as float32, BYTES as bytes)."""

    name: str
    datatype: str
    shape: list[int]
    values: np.ndarray | list[bytes]


@dataclass
class OutputRequest:
    """One entry of `outputs`: which output, in binary or JSON, as top-k or not."""

    name: str
    binary: bool
    classification: int = 0


@dataclass
class InferRequest:
    id: str | None
    parameters: dict[str, Any]
    inputs: list[RequestTensor]
    outputs: list[OutputRequest] | None
    binary_output: bool = False


def parse_infer_request(
    body: bytes, header_length: str | None, datatypes: dict[str, str], max_depth: int
) -> InferRequest:
    """Split and decode a request body whose inputs must be among `datatypes`.

    Raises:
        InvalidInputError: malformed JSON or binary layout, JSON nested deeper
            than `max_depth`, unknown or repeated input, wrong datatype,
            element count that does not match the shape, bad base64.
    """
    json_part, binary_part = _split_body(body, header_length)
    # Counted before parsing: a deeply nested body would otherwise reach
    # Python's recursion limit inside the parser.
    check_json_depth(json_part, max_depth)
    header = _load_json(json_part)
    parameters = _parameters(header, "request")

    inputs_json = header.get("inputs")
    if not isinstance(inputs_json, list) or not inputs_json:
        raise InvalidInputError("'inputs' must be a non-empty list of tensors")
    binary = memoryview(binary_part)
    offset = 0
    inputs: list[RequestTensor] = []
    for entry in inputs_json:
        tensor, used = _read_tensor(entry, binary[offset:], datatypes)
        if any(seen.name == tensor.name for seen in inputs):
            raise InvalidInputError(f"input {tensor.name!r} is given twice")
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise InvalidInputError(
            f"{len(binary) - offset} bytes of binary data follow the JSON header "
            "that no input's binary_data_size accounts for"
        )

    request_id = header.get("id")
    return InferRequest(
        id=None if request_id is None else str(request_id),
        parameters=parameters,
        inputs=inputs,
        outputs=_read_outputs(header.get("outputs")),
        binary_output=_flag(parameters, "binary_data_output"),
    )


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    text = header_length.strip()
    if not text.isdigit() or int(text) > len(body):
        raise InvalidInputError(
            f"Inference-Header-Content-Length {header_length!r} must be a byte count "
            f"of at most the body's {len(body)} bytes"
        )
    return body[: int(text)], body[int(text):]


def _refuse_constant(token: str) -> float:
    raise InvalidInputError(f"{token} is not a number this service takes (NaN or Inf)")


def _load_json(data: bytes) -> dict[str, Any]:
    try:
        header = json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInputError(f"the request is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidInputError("the request must be a JSON object")
    return header


def _parameters(entry: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = entry.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInputError(f"{where} 'parameters' must be a JSON object")
    return parameters


def _flag(parameters: dict[str, Any], name: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInputError(f"parameter {name!r} must be true or false, got {value!r}")
    return value


def _read_tensor(
    entry: Any, binary: memoryview, datatypes: dict[str, str]
) -> tuple[RequestTensor, int]:
    """The tensor of one `inputs` entry and how many binary bytes it took."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise InvalidInputError("each input must be an object with a string 'name'")
    name = entry["name"]
    if name not in datatypes:
        raise InvalidInputError(
            f"unknown input {name!r}; this model takes one of {sorted(datatypes)} "
            "(blocks are removed through the request parameter 'remove')"
        )
    datatype = entry.get("datatype")
    shape = entry.get("shape")
    if datatype != datatypes[name]:
        raise InvalidInputError(
            f"input {name!r} must have datatype {datatypes[name]}, not {datatype!r}"
        )
    if not isinstance(shape, list) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape
    ):
        raise InvalidInputError(f"input {name!r}: 'shape' must be a list of sizes >= 0")
    count = math.prod(shape)

    size = _parameters(entry, f"input {name!r}").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(binary):
            raise InvalidInputError(
                f"input {name!r}: binary_data_size {size!r} is not within the "
                f"{len(binary)} bytes after the JSON header"
            )
        if "data" in entry:
            raise InvalidInputError(f"input {name!r} has both 'data' and binary_data_size")
        values = _binary_values(name, datatype, bytes(binary[:size]), count)
        return RequestTensor(name, datatype, shape, values), size

    if "data" not in entry:
        raise InvalidInputError(f"input {name!r} has neither 'data' nor binary_data_size")
    values = _json_values(name, datatype, entry["data"], count)
    return RequestTensor(name, datatype, shape, values), 0


def _binary_values(
    name: str, datatype: str, data: bytes, count: int
) -> np.ndarray | list[bytes]:
    if datatype == "BYTES":
        return _split_bytes(name, data, count)
    if len(data) != 4 * count:
        raise InvalidInputError(
            f"input {name!r}: {len(data)} bytes of FP32 data do not match the "
            f"shape's {count} elements ({4 * count} bytes)"
        )
    # Raw IEEE values are taken as sent, as Triton does: its perf_analyzer
    # fills FP32 inputs with random bytes, about one float in 256 of them NaN.
    return np.frombuffer(data, dtype="<f4")


def _split_bytes(name: str, data: bytes, count: int) -> list[bytes]:
    elements = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise InvalidInputError(f"input {name!r}: truncated BYTES length prefix")
        (length,) = _LENGTH_PREFIX.unpack_from(data, offset)
        offset += 4
        if offset + length > len(data):
            raise InvalidInputError(f"input {name!r}: BYTES element runs past its data")
        elements.append(data[offset: offset + length])
        offset += length
    if len(elements) != count:
        raise InvalidInputError(
            f"input {name!r}: {len(elements)} BYTES elements do not match the "
            f"shape's {count}"
        )
    return elements


def _json_values(name: str, datatype: str, data: Any, count: int) -> np.ndarray | list[bytes]:
    if datatype == "BYTES":
        elements = [_decode_base64(name, item) for item in _flatten_strings(name, data)]
        if len(elements) != count:
            raise InvalidInputError(
                f"input {name!r}: {len(elements)} BYTES elements do not match the "
                f"shape's {count}"
            )
        return elements
    return _json_numbers(name, data, count)


def _json_numbers(name: str, data: Any, count: int) -> np.ndarray:
    """FP32 values of JSON `data`, nested or flat, refusing anything but numbers.

    Elements are typed one by one on an object array: a plain `np.array`
    would quietly turn `true` into 1.0 next to numbers, and strings into a
    string array. Values are widened to float64 and range-checked before the
    narrowing cast, which would otherwise warn on overflow and give Inf.
    """
    try:
        elements = np.array(data, dtype=object).reshape(-1)
    except ValueError:
        raise InvalidInputError(f"input {name!r}: 'data' is ragged, not a tensor") from None
    others = set(map(type, elements)) - _NUMBER_TYPES
    if others:
        found = ", ".join(sorted(_JSON_KINDS.get(kind, kind.__name__) for kind in others))
        raise InvalidInputError(
            f"input {name!r}: FP32 'data' must hold only numbers, nested or flat; got {found}"
        )
    if elements.size != count:
        raise InvalidInputError(
            f"input {name!r}: 'data' must hold {count} numbers (the shape's element "
            f"count), nested or flat; got {elements.size}"
        )

    try:
        wide = elements.astype(np.float64)
    except OverflowError:  # an integer beyond float64 as well
        raise _beyond_fp32(name) from None
    # NaN fails the comparison too; JSON reads 1e400 as Inf.
    if not (np.abs(wide) <= _FP32_MAX).all():
        raise _beyond_fp32(name)
    return wide.astype(np.float32)


def _beyond_fp32(name: str) -> InvalidInputError:
    return InvalidInputError(
        f"input {name!r} holds NaN, Inf or a value beyond FP32's range "
        f"(|x| <= {_FP32_MAX:.4g})"
    )


def _flatten_strings(name: str, data: Any) -> list[str]:
    if isinstance(data, str):
        return [data]
    if not isinstance(data, list):
        raise InvalidInputError(f"input {name!r}: BYTES data must be strings")
    return [item for part in data for item in _flatten_strings(name, part)]


def _decode_base64(name: str, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(
            f"input {name!r}: BYTES elements in JSON must be base64 ({text[:20]!r}...)"
        ) from None


def _read_outputs(outputs: Any) -> list[OutputRequest] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise InvalidInputError("'outputs' must be a list")
    requested = []
    for entry in outputs:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidInputError("each output must be an object with a string 'name'")
        parameters = _parameters(entry, f"output {entry['name']!r}")
        top_k = parameters.get("classification", 0)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
            raise InvalidInputError(
                f"output {entry['name']!r}: classification must be a count >= 0"
            )
        requested.append(OutputRequest(entry["name"], _flag(parameters, "binary_data"), top_k))
    return requested


@dataclass
class ResponseTensor:
    """One output as the answer carries it."""

    name: str
    values: np.ndarray | list[bytes]
    shape: list[int]
    binary: bool

    @property
    def datatype(self) -> str:
        return "FP32" if isinstance(self.values, np.ndarray) else "BYTES"


def classify_strings(scores: np.ndarray, top_k: int, labels: Sequence[str]) -> list[bytes]:
    """Triton's classification output: per row the top k as `score:index:label`."""
    k = min(top_k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [
        f"{scores[row, index]:f}:{index}:{labels[index]}".encode()
        for row in range(len(scores)) for index in order[row]
    ]


def encode_response(
    header: dict[str, Any], tensors: Sequence[ResponseTensor]
) -> tuple[bytes, dict[str, str]]:
    """The body and the headers that describe it (binary parts after the JSON)."""
    chunks = []
    outputs = []
    for tensor in tensors:
        entry: dict[str, Any] = {
            "name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape,
        }
        if tensor.binary:
            chunk = _tensor_bytes(tensor.values)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        elif isinstance(tensor.values, np.ndarray):
            entry["data"] = tensor.values.reshape(-1).tolist()
        else:
            entry["data"] = [value.decode() for value in tensor.values]
        outputs.append(entry)

    text = json.dumps({**header, "outputs": outputs}, separators=(",", ":")).encode()
    if not chunks:
        return text, {"content-type": JSON_TYPE}
    headers = {"content-type": BINARY_TYPE, HEADER_LENGTH: str(len(text))}
    return b"".join([text, *chunks]), headers


def _tensor_bytes(values: np.ndarray | list[bytes]) -> bytes:
    if isinstance(values, np.ndarray):
        return values.astype("<f4", copy=False).tobytes()
    return b"".join(_LENGTH_PREFIX.pack(len(value)) + value for value in values)
