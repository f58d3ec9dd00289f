"""One UI module per tab of the app (clipgpt_app.main); each is a thin layer over clipgpt_core. What more than
one tab shows lives here, so that no tab imports another."""
import hashlib
import io
import os
import tempfile
from pathlib import Path

import gradio as gr
from PIL import Image

from clipgpt_core.errors import ClipGPTError
from clipgpt_core.images import BadImageError, load_image


def upscale(image: Image.Image, side: int) -> str:
    """A gallery image as a file: small (64x64) images upscaled with hard edges to about `side` px, so shapes stay
    crisp, written once under its content's hash (see gallery_file)."""
    if max(image.size) < side:
        f = max(1, side // max(image.size))
        image = image.resize((image.width * f, image.height * f), Image.Resampling.NEAREST)
    return gallery_file(image)


GALLERY_DIR = Path(tempfile.gettempdir()) / "clipgpt-gallery"


def gallery_file(image: Image.Image) -> str:
    """A PNG file holding the image, named by its content's hash, written atomically (a temporary file renamed into
    place) and never rewritten. Why: given a PIL image, Gradio writes its cache file (also named by content) again on
    every answer, truncating it first; two users shown the same image (the same search, the same seeded render) then
    race, and the one whose download lands during the rewrite loses the connection ("peer closed connection without
    sending complete message body", benchmarks/bench_serve.py). Given a path, Gradio copies it into its cache once."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    data = buf.getvalue()
    path = GALLERY_DIR / f"{hashlib.sha1(data).hexdigest()}.png"
    if not path.exists():
        GALLERY_DIR.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=GALLERY_DIR, suffix=".tmp", delete=False) as f:
            f.write(data)
        os.replace(f.name, path)
    return str(path)


NO_RENDERER = ("This bundle has no renderer. Train one (about an hour on a 2-core CPU) with\n\n"
               "`python -m clipgpt_train.renderer --out BUNDLE/renderer`\n\n"
               "and add `\"renderer\": {\"kind\": \"diffusers_stable_diffusion\", \"path\": \"renderer\"}` to the "
               "bundle's manifest.json components; or start the app with an `open_clip:` bundle to drive "
               "Stable Diffusion 1.5 from the local Hugging Face cache.")


def bundle_renderer(bundle):
    """The bundle's renderer, loaded on first use; gr.Error saying how to get one, or why it failed."""
    if not bundle.has_renderer():
        raise gr.Error(NO_RENDERER)
    try:
        return bundle.renderer          # an absent pretrained model (or one not fetched yet) says so here
    except ClipGPTError as e:
        raise gr.Error(str(e)) from e


def format_hits(hits) -> list[tuple[str, str]]:
    """Search hits -> gallery items (an upscaled image file, "similarity · caption"); unreadable files left out."""
    items = []
    for h in hits:
        try:
            image = h.image if h.image is not None else (load_image(h.image_path) if h.image_path else None)
        except BadImageError:       # a file of an indexed folder that has since gone or broken: leave it out
            continue
        if image is not None:
            items.append((upscale(image, 160), f"{h.similarity:.3f} · {h.caption or Path(h.image_path or '').name}"))
    return items
