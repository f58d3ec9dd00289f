"""CLIP GPT core: ShapesWorld, model bundles and the work behind each tab (no UI code here).
What the README documents is importable from here (on first use: lazy.py); the trainers are in clipgpt_train."""
from .lazy import exports

_WHERE = {
    "Bundle": "bundle", "LoadingBundle": "bundle", "load_bundle": "bundle", "save_bundle": "bundle",
    "caption_folder": "caption_folder", "Captioner": "captioner", "parse_caption": "captions",
    "ClipEncoder": "clip_model", "WeightsNotAvailable": "clip_model", "create_clip": "clip_model",
    "EmbeddingPrior": "embedding_prior", "ClipGPTError": "errors", "InputError": "errors", "BundleError": "errors",
    "Explanation": "explainers", "explain": "explainers", "BadImageError": "images", "load_image": "images",
    "CaptionPrior": "prior", "RemoteError": "remote", "RemoteIndex": "remote", "Renderer": "renderer",
    "RenderError": "renderer", "NearestImages": "retrieval",
}
__all__ = list(_WHERE)
__getattr__, __dir__ = exports(__name__, _WHERE)
