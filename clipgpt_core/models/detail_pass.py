"""The detail pass: each small object of a planned scene drawn again, large, in its own image, then scaled down
into its place (ADetailer's crop -> redraw -> paste, and SD's "hires fix", for a planned layout).

    crops = detail_crops(scenes)                     # one Crop per small object, each with a one-object scene
    images = pipe(texts + [c.text for c in crops], layout=layout_map(scenes + [c.scene for c in crops]))
    images = paste_details(images[:len(scenes)], crops, images[len(scenes):])

Why: at 64x64 a small object is 10-14 px, 5-7 cells of the 32x32 latent, and the UNet draws its outline
worse than a large one's (a small star comes out a blob); the same UNet draws a large object's outline nearly
always right. So a small object is drawn where it is drawn best, as a large object alone on the scene's
background, in the same batch as the scene (one denoising loop), and scaled down over its place. The planner
keeps objects' reach circles apart (world.fits), so each paste touches only its own object's disk.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..world import scenes as world

DETAIL_EXTENT = 25.0      # px: the object's side in its detail image, mid "large" (world.SIZES)
REACH = 0.72              # an object's reach over its side (world.fits): extent/2 * sqrt(2), rotation covered


@dataclass(frozen=True)
class Crop:
    """A small object of scene `index`, to be drawn large: its detail scene and prompt, and where the detail
    image lands in the scene's image (the square of side `side` px centred on the object)."""
    index: int
    obj: world.Obj
    scene: world.Scene
    text: str

    @property
    def side(self) -> float:
        return world.CANVAS * self.obj.extent / DETAIL_EXTENT


def detail_crops(scenes: list[world.Scene | None]) -> list[Crop]:
    """One Crop per small object of each scene, scene by scene."""
    out = []
    for i, scene in enumerate(scenes):
        for o in (scene.objects if scene is not None else ()):
            if o.size != "small":
                continue
            big = world.Obj(o.colour, o.shape, "large", world.CANVAS / 2, world.CANVAS / 2, DETAIL_EXTENT, o.angle)
            d = world.Description((world.Phrase(o.shape, o.colour, "large"),), background=scene.background)
            out.append(Crop(i, o, world.Scene(scene.background, (big,)), world.caption_text(d)))
    return out


def _border_colour(x: np.ndarray) -> np.ndarray:
    """The median of an image's outermost pixels -> (3,): its background colour as drawn."""
    edge = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    return np.median(edge, axis=0)


def paste_details(images: list, crops: list[Crop], details: list) -> list:
    """Each crop's detail image scaled down to its object's size and laid over the object's disk in its scene's
    image (the disk first cleared to the scene's background) -> new PIL images."""
    from PIL import Image
    out = [np.asarray(im.convert("RGB"), np.float32).copy() for im in images]
    yy, xx = np.mgrid[0:world.CANVAS, 0:world.CANVAS] + 0.5                     # pixel centres
    for c, detail in zip(crops, details):
        x = out[c.index]
        side = max(1, round(c.side))
        small = np.asarray(detail.convert("RGB").resize((side, side), Image.Resampling.LANCZOS), np.float32)
        # where the detail image lands: the side x side square centred on the object, clipped to the canvas
        x0, y0 = round(c.obj.cx - side / 2), round(c.obj.cy - side / 2)
        placed = np.zeros_like(x)
        have = np.zeros(x.shape[:2], bool)
        sx0, sy0 = max(0, -x0), max(0, -y0)
        dx0, dy0 = max(0, x0), max(0, y0)
        w = min(side - sx0, world.CANVAS - dx0)
        h = min(side - sy0, world.CANVAS - dy0)
        placed[dy0:dy0 + h, dx0:dx0 + w] = small[sy0:sy0 + h, sx0:sx0 + w]
        have[dy0:dy0 + h, dx0:dx0 + w] = True
        # alpha: how far each detail pixel is from the detail's own background (1 on the object, 0 around it)
        bg_detail = _border_colour(np.asarray(detail.convert("RGB"), np.float32))
        alpha = np.clip((np.linalg.norm(placed - bg_detail, axis=-1) - 20.0) / 50.0, 0, 1) * have
        # the object's disk, feathered over 2 px: inside it the scene's own drawing of the object is replaced
        reach = c.obj.extent * REACH + 1
        disk = np.clip((reach + 1 - np.hypot(xx - c.obj.cx, yy - c.obj.cy)) / 2, 0, 1) * have
        bg = _border_colour(x)
        redrawn = bg * (1 - alpha[..., None]) + placed * alpha[..., None]
        out[c.index] = x * (1 - disk[..., None]) + redrawn * disk[..., None]
    return [Image.fromarray(np.clip(x + 0.5, 0, 255).astype(np.uint8)) for x in out]
