"""CLIP GPT core: ShapesWorld, model bundles and the work behind each tab (no UI code here).
What the README documents is importable from here; the trainers are in clipgpt_train."""
from .bundle import Bundle, BundleError, load_bundle, save_bundle
from .caption_folder import caption_folder
from .captioner import Captioner
from .captions import parse_caption
from .clip_model import ClipEncoder, WeightsNotAvailable, create_clip
from .embedding_prior import EmbeddingPrior
from .errors import ClipGPTError, InputError
from .explain import Explanation, explain  # noqa: E402  (the function shadows the submodule's name here)
from .images import BadImageError, load_image
from .prior import CaptionPrior
from .remote import RemoteError, RemoteIndex
from .renderer import Renderer, RenderError
from .retrieval import NearestImages

__all__ = ["Bundle", "BundleError", "load_bundle", "save_bundle", "ClipEncoder", "WeightsNotAvailable",
           "create_clip", "BadImageError", "load_image", "CaptionPrior", "Captioner", "EmbeddingPrior",
           "parse_caption", "explain", "Explanation", "Renderer", "RenderError",
           "ClipGPTError", "InputError", "NearestImages", "RemoteIndex", "RemoteError", "caption_folder"]
