"""ShapesWorld: the world's spec and scenes (scenes.py: `world.COLOURS`, `world.sample_scene`, `world.render`),
its caption language (captions.py), the caption corpus (corpus.py), zero-shot labels (zeroshot.py) and the
planted functions Explain is measured on (planted.py)."""
from .scenes import *  # noqa: F401,F403 -- the spec and scenes are the package's face
from .scenes import HELDOUT_PAIRS, RenderStyle  # noqa: F401 -- named for readers and linters
