"""One UI module per tab of the app (clipgpt_app.main); each is a thin layer over clipgpt_core. What more than
one tab shows lives here, so that no tab imports another."""
import gradio as gr
from PIL import Image

from clipgpt_core.models.renderer import RenderError


def upscale(image: Image.Image, side: int) -> Image.Image:
    """Small (64x64) gallery images are upscaled with hard edges to about `side` px, so shapes stay crisp."""
    if max(image.size) >= side:
        return image
    f = max(1, side // max(image.size))
    return image.resize((image.width * f, image.height * f), Image.Resampling.NEAREST)


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
        return bundle.renderer          # an absent pretrained model says so here
    except RenderError as e:
        raise gr.Error(str(e)) from e
