"""One UI module per tab of app.py; each is a thin layer over clipgpt_core."""
from PIL import Image


def upscale(image: Image.Image, side: int) -> Image.Image:
    """Small (64x64) gallery images are upscaled with hard edges to about `side` px, so shapes stay crisp."""
    if max(image.size) >= side:
        return image
    f = max(1, side // max(image.size))
    return image.resize((image.width * f, image.height * f), Image.Resampling.NEAREST)
