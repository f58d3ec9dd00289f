"""ShapesWorld: the world's spec and scenes (scenes.py: `world.COLOURS`, `world.sample_scene`, `world.render`),
its caption language (captions.py), the caption corpus (corpus.py) and zero-shot labels (zeroshot.py)."""
from .scenes import *  # noqa: F401,F403 -- the spec and scenes are the package's face
