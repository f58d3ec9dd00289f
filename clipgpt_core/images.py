"""Turning whatever a user hands us into a clean RGB PIL image, or a clear error."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from .errors import ClipGPTError

MAX_PIXELS = 50_000_000        # refuse anything larger (decompression bombs, absurd scans)
WORKING_SIDE = 1024            # larger images are shrunk once on load; models use 64-224 px
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # PIL raises DecompressionBombError above 2x this
READABLE = "PNG, JPEG, WebP, GIF, BMP, TIFF"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}   # what a folder's images are


class BadImageError(ClipGPTError, ValueError):
    """An input that is not a usable image; the message says why, in plain words."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparent pixels are composited onto white, not dropped."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit / float grayscale: rescale to 8 bits before converting
        arr = np.asarray(image.convert("F"), dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        image = Image.fromarray(((arr - lo) * (255.0 / max(hi - lo, 1e-6))).astype(np.uint8), "L")
    return image.convert("RGB")


def load_image(source) -> Image.Image:
    """Path, bytes, numpy array or PIL image -> RGB PIL image no larger than WORKING_SIDE.

    Raises BadImageError with a message a person can act on."""
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.exists():
                raise BadImageError(f"No such file: {path}")
            if path.is_dir():
                raise BadImageError(f"{path} is a folder, not an image")
            if path.stat().st_size == 0:
                raise BadImageError(f"{path.name} is empty (0 bytes), not an image")
            image = Image.open(path)
        elif isinstance(source, (bytes, bytearray)):
            image = Image.open(io.BytesIO(source))
        elif hasattr(source, "__array__"):
            image = Image.fromarray(source)
        else:
            raise BadImageError(f"Cannot read an image from a {type(source).__name__}")
        if image.width * image.height > MAX_PIXELS:
            raise BadImageError(f"Image is {image.width}x{image.height} pixels; the limit is "
                                f"{MAX_PIXELS // 1_000_000} megapixels. Downscale it first.")
        if image.width < 1 or image.height < 1:
            raise BadImageError("Image has no pixels")
        image.load()  # decode now, so truncated files fail here and not deep in a model
        image = to_rgb(image)
        if max(image.size) > WORKING_SIDE:
            image = image.copy()
            image.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.LANCZOS)
        return image
    except BadImageError:
        raise
    except Image.DecompressionBombError as e:
        raise BadImageError(f"Image is too large to open safely ({e}); the limit is "
                            f"{MAX_PIXELS // 1_000_000} megapixels. Downscale it first.") from e
    except UnidentifiedImageError as e:
        # PIL's message names the full path (an upload's is a server temp file): say it without it
        raise BadImageError(f"Not an image, or not a format this app reads ({READABLE}); is the file "
                            f"corrupt or of another kind?") from e
    except (OSError, SyntaxError, ValueError, TypeError) as e:
        raise BadImageError(f"Not a readable image ({type(e).__name__}: {e})") from e
