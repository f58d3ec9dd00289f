"""CLIP GPT core: ShapesWorld, model bundles and the work behind each tab (no UI code here).
What the README documents is importable from here (on first use: lazy.py); the trainers are in clipgpt_train."""
from .lazy import exports

_WHERE = {
    "Bundle": "bundle", "LoadingBundle": "bundle", "load_bundle": "bundle", "save_bundle": "bundle",
    "caption_folder": "jobs.caption_folder", "Captioner": "models.captioner", "parse_caption": "world.captions",
    "ClipEncoder": "models.clip", "WeightsNotAvailable": "models.clip", "create_clip": "models.clip",
    "EmbeddingPrior": "models.embedding_prior", "ClipGPTError": "errors", "InputError": "errors", "BundleError": "errors",
    "Explanation": "explainers", "explain": "explainers", "BadImageError": "images", "load_image": "images",
    "CaptionPrior": "models.caption_prior", "RemoteError": "retrieval.remote", "RemoteIndex": "retrieval.remote", "Renderer": "models.renderer",
    "RenderError": "models.renderer", "NearestImages": "retrieval.nearest",
}
__all__ = list(_WHERE)
__getattr__, __dir__ = exports(__name__, _WHERE)
