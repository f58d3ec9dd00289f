"""An image input that hands the core the uploaded file, undecoded.

gr.Image decodes every upload itself, even with type="filepath" (it opens the file to read its mode), so a
corrupt, truncated, empty, non-image or 400-megapixel upload failed inside Gradio ("Could not preprocess
input component") before the core could say what was wrong. `ImageFile` shows and uploads like gr.Image
but passes the file's path through; clipgpt_core.images.load_image decodes it and raises BadImageError
(a ClipGPTError) with a message the tab shows.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

import gradio as gr

MAX_DATA_URL_BYTES = 64 * 1024 * 1024   # base64 images sent inline (API clients); uploads have no such cap


class ImageFile(gr.Image):
    """gr.Image whose handler receives the uploaded file's path (str) or None, never a decoded image."""

    is_template = True      # drawn by the browser's own Image component (get_block_name -> "image")

    def get_config(self, cls=None):
        # the browser's props are read off the constructor's named parameters: gr.Image's, not this
        # __init__'s (*args, **kwargs), or the page gets an Image with no label, sources or anything
        # (and draws nothing; tests/test_browser.py)
        return super().get_config(cls or gr.Image)

    def __init__(self, *args, **kwargs):
        kwargs.update(type="filepath", image_mode=None)   # decoding and mode conversion belong to the core
        super().__init__(*args, **kwargs)

    def preprocess(self, payload) -> str | None:
        if payload is None:
            return None
        if payload.url and payload.url.startswith("data:"):
            return self._data_url_to_file(payload.url)
        if not payload.path:
            raise gr.Error("The image arrived without a file; upload it again")
        return str(payload.path)

    def _data_url_to_file(self, url: str) -> str:
        """A data:image/...;base64 URL -> the same bytes in a file of the Gradio cache (still undecoded)."""
        header, _, data = url.partition(",")
        if ";base64" not in header:
            raise gr.Error("An inline image must be a base64 data URL (data:image/png;base64,...)")
        if len(data) * 3 // 4 > MAX_DATA_URL_BYTES:
            raise gr.Error(f"The inline image is over {MAX_DATA_URL_BYTES // 2**20} MiB; upload it as a file")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as e:
            raise gr.Error(f"The inline image is not valid base64 ({e})") from e
        folder = Path(self.GRADIO_CACHE) / hashlib.sha256(raw).hexdigest()[:20]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "image"
        path.write_bytes(raw)
        return str(path)

