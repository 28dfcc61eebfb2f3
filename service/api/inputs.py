"""Read images from a request, within limits, and preprocess them off the event loop."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from models.manifest import Preprocessing
from models.preprocessing import ImageTooLargeError, InvalidImageError, decode_and_preprocess
from service.errors import (
    InvalidInputError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
)

FORM_FIELD = "file"
_MAX_FORM_FIELDS = 1000
T = TypeVar("T")

# A JSON string, escapes included, written so that the regex engine never backtracks.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET_STEP = np.zeros(256, dtype=np.int8)
_BRACKET_STEP[[ord("["), ord("{")]] = 1
_BRACKET_STEP[[ord("]"), ord("}")]] = -1
# Bodies this small are parsed on the event loop; larger ones on the decode pool.
_JSON_INLINE_BYTES = 1024 * 1024

# Decoding is mostly C code that releases the GIL; a small pool of its own keeps
# it off the event loop without competing with ONNX Runtime for many threads.
_decode_pool = ThreadPoolExecutor(2, thread_name_prefix="decode")


async def read_body(request: Request, limit: int, deadline: float) -> bytes:
    """The whole body, refusing it as soon as it is known to exceed `limit`.

    Raises:
        PayloadTooLargeError: the body is over `limit` bytes.
        RequestTimeoutError: it had not all arrived at `deadline` (monotonic
            seconds): a client that trickles its body in holds a connection
            and its buffers no longer than any other request.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(
            f"request body of {declared} bytes is over the limit of {limit} bytes"
        )
    chunks = []
    received = 0
    try:
        # The event loop's clock is time.monotonic, the clock of deadlines.
        async with asyncio.timeout_at(deadline):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise PayloadTooLargeError(
                        f"request body is over the limit of {limit} bytes"
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeoutError(
            f"the request body was not complete by the request's deadline "
            f"({received} bytes had arrived)"
        ) from None
    body = b"".join(chunks)
    # Starlette's form parser reads the cached body instead of the spent stream.
    request._body = body
    return body


def json_depth(data: bytes) -> int:
    """How deeply arrays and objects nest in the JSON text `data`.

    Counted without parsing (brackets inside strings are skipped), in NumPy,
    so that a hostile body costs milliseconds, never Python's recursion limit.
    """
    outside_strings = _JSON_STRING.sub(b'""', data)
    codes = np.frombuffer(outside_strings, dtype=np.uint8)
    if not codes.size:
        return 0
    return int(np.cumsum(_BRACKET_STEP[codes], dtype=np.int64).max(initial=0))


def check_json_depth(data: bytes, max_depth: int) -> None:
    """Refuse JSON text nested deeper than `max_depth`, before any parser sees it.

    Raises:
        InvalidInputError: it nests deeper than `max_depth`.
    """
    depth = json_depth(data)
    if depth > max_depth:
        raise InvalidInputError(
            f"JSON body nests {depth} levels deep; the limit is {max_depth}"
        )


async def parse_off_loop(body: bytes, parse: Callable[[bytes], T]) -> T:
    """`parse(body)`, on the decode pool when the body is large.

    Small bodies are parsed on the event loop, where a thread hop would cost
    more than the parse; a body of megabytes of JSON would stall every other
    request for tens of milliseconds.
    """
    if len(body) < _JSON_INLINE_BYTES:
        return parse(body)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_decode_pool, parse, body)


async def read_images(
    request: Request, max_bytes: int, max_images: int, deadline: float
) -> list[bytes]:
    """Encoded images from a multipart `file` field (repeatable) or a raw image body.

    Raises:
        UnsupportedMediaTypeError: neither multipart/form-data nor image/*.
        PayloadTooLargeError: body over `max_bytes` or more than `max_images`.
        InvalidInputError: no image in the request, or a malformed form.
        RequestTimeoutError: the body had not arrived at `deadline`.
    """
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != "multipart/form-data" and not media_type.startswith("image/"):
        raise UnsupportedMediaTypeError(
            f"unsupported content type {media_type or '(none)'!r}: send images as "
            f"multipart/form-data field {FORM_FIELD!r} or as a raw image/* body"
        )

    body = await read_body(request, max_bytes, deadline)
    if media_type.startswith("image/"):
        return [body]

    try:
        form = await request.form(max_files=max_images + 1, max_fields=_MAX_FORM_FIELDS)
    except MultiPartException as exc:
        raise _form_error(exc.message, max_images) from None
    except HTTPException as exc:
        # Inside an application Starlette hands its parser's refusal on as a 400.
        raise _form_error(exc.detail, max_images) from None
    uploads = form.getlist(FORM_FIELD)
    if not uploads:
        raise InvalidInputError(f"no image in multipart field {FORM_FIELD!r}")
    if len(uploads) > max_images:
        raise PayloadTooLargeError(
            f"{len(uploads)} or more images in one request; the limit is {max_images}"
        )
    images = []
    for position, upload in enumerate(uploads, start=1):
        if not isinstance(upload, UploadFile):
            raise InvalidInputError(
                f"image {position} of {len(uploads)}: field {FORM_FIELD!r} must be a "
                "file upload, not text"
            )
        images.append(await upload.read())
    await form.close()
    return images


def _form_error(message: str, max_images: int) -> InvalidInputError:
    """Starlette's refusal of a form, in the words of this service's limits."""
    # Starlette stops at `max_files` parts, whatever their field: it cannot
    # tell how many there were, only that there were too many.
    if message.startswith("Too many files"):
        return PayloadTooLargeError(
            f"more than {max_images} files in one request; the limit is {max_images} images"
        )
    if message.startswith("Too many fields"):
        return PayloadTooLargeError(
            f"more than {_MAX_FORM_FIELDS} form fields in one request"
        )
    return InvalidInputError(f"malformed multipart body: {message}")


def _preprocess_all(
    images: Sequence[bytes], spec: Preprocessing, max_pixels: int, abandoned: threading.Event
) -> list[np.ndarray]:
    tensors = []
    many = len(images) > 1
    for position, data in enumerate(images, start=1):
        if abandoned.is_set():
            return []
        where = f"image {position} of {len(images)}: " if many else ""
        try:
            tensors.append(decode_and_preprocess(data, spec, max_pixels))
        except ImageTooLargeError as exc:
            raise PayloadTooLargeError(f"{where}{exc}") from None
        except InvalidImageError as exc:
            raise InvalidInputError(f"{where}{exc}") from None
    return tensors


async def preprocess_images(
    images: Sequence[bytes], spec: Preprocessing, max_pixels: int
) -> list[np.ndarray]:
    """Decode and preprocess on the decode pool; the first bad image refuses all.

    A request cancelled meanwhile (its client left, or shutdown cut it short)
    stops its worker at the next image: a large request would otherwise keep a
    decode thread, and the process's exit, busy for seconds after it.
    """
    loop = asyncio.get_running_loop()
    abandoned = threading.Event()
    try:
        return await loop.run_in_executor(
            _decode_pool, _preprocess_all, images, spec, max_pixels, abandoned
        )
    except asyncio.CancelledError:
        abandoned.set()
        raise
