"""CLIP GPT core: ShapesWorld, model bundles and the work behind each tab (no UI code here)."""
from .bundle import Bundle, BundleError, load_bundle, save_bundle
from .clip_model import ClipEncoder, WeightsNotAvailable, create_clip
from .images import BadImageError, load_image

__all__ = ["Bundle", "BundleError", "load_bundle", "save_bundle", "ClipEncoder", "WeightsNotAvailable",
           "create_clip", "BadImageError", "load_image"]
