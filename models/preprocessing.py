"""Decode an encoded image and turn it into a model's input tensor.

This is the one preprocessing path of the project: offline evaluation, the
lesion study and both HTTP APIs call `decode_and_preprocess`. It needs Pillow
and NumPy only, not PyTorch.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from models.manifest import Preprocessing

DEFAULT_MAX_PIXELS = 40_000_000

#: The formats Pillow may open, by its names (its JPEG reader also gives the
#: MPO files of many phone cameras). Pillow knows dozens more; some hand the
#: bytes to outside programs (EPS to Ghostscript), and none is needed here.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
_FORMAT_NAMES = "JPEG, PNG, WebP, BMP, TIFF or GIF"

# Our own pixel limit is checked first and is lower; Pillow's check would
# otherwise raise its own error (or warn) with a message we do not control.
Image.MAX_IMAGE_PIXELS = None

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_RESAMPLING = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


class ImageError(ValueError):
    """The bytes are not an image this service can use."""


class InvalidImageError(ImageError):
    """Empty, truncated, corrupt, or not an image at all."""


class ImageTooLargeError(ImageError):
    """More pixels than allowed; decided from the header, before decoding."""


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode `data` into an 8-bit RGB image with its EXIF orientation applied.

    Raises:
        InvalidImageError: the bytes are empty, corrupt, truncated or not an image.
        ImageTooLargeError: the header declares more than `max_pixels` pixels.
    """
    if not data:
        raise InvalidImageError("the image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise InvalidImageError(f"not an image in an accepted format ({_FORMAT_NAMES})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImageError(f"cannot read the image header: {exc}") from None

    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels, "
            f"more than the limit of {max_pixels}"
        )
    if width == 0 or height == 0:
        raise InvalidImageError(f"image has no pixels ({width}x{height})")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd EXIF blocks
            image.load()
            image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, IndexError, EOFError) as exc:
        raise InvalidImageError(f"cannot decode the image: {exc}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited over white."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "F":
        image = _to_eight_bit(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise InvalidImageError(f"unsupported colour mode {image.mode!r}: {exc}") from None


def _to_eight_bit(image: Image.Image) -> Image.Image:
    # Pillow's own conversion clips 16-bit values at 255 instead of scaling.
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        peak = 1.0 if values.size and float(np.nanmax(values)) <= 1.0 else 255.0
    elif image.mode == "I" and values.size and float(values.max()) <= 255:
        peak = 255.0
    else:
        peak = 65535.0
    scaled = np.clip(np.nan_to_num(values) / peak * 255.0 + 0.5, 0, 255)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def resize_and_crop(image: Image.Image, spec: Preprocessing) -> Image.Image:
    """Apply the spec's resize and centre crop (the image as the model sees it)."""
    resample = _RESAMPLING[spec.interpolation]
    if spec.crop is None:
        size = (spec.resize, spec.resize)
        return image if image.size == size else image.resize(size, resample)

    # Shorter side to `resize`, the longer scaled and truncated as
    # torchvision's Resize(int) does, so torchvision-trained weights see the
    # inputs they were evaluated on.
    width, height = image.size
    short, long = min(width, height), max(width, height)
    long = max(spec.resize, int(spec.resize * long / short))
    new_size = (spec.resize, long) if width <= height else (long, spec.resize)
    if new_size != image.size:
        image = image.resize(new_size, resample)
    left = (new_size[0] - spec.crop) // 2
    top = (new_size[1] - spec.crop) // 2
    return image.crop((left, top, left + spec.crop, top + spec.crop))


def normalise(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """Scale to [0, 1], normalise per channel, and return float32 CHW."""
    pixels = np.asarray(image, dtype=np.float32)
    scale = 1.0 / (255.0 * np.asarray(spec.std, dtype=np.float32))
    offset = -np.asarray(spec.mean, dtype=np.float32) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray((pixels * scale + offset).transpose(2, 0, 1))


def decode_and_preprocess(
    data: bytes, spec: Preprocessing, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Encoded image bytes to the model's float32 [3, H, W] input."""
    image = resize_and_crop(decode_image(data, max_pixels), spec)
    return normalise(image, spec)
