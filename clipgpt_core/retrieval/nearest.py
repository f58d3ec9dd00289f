"""Nearest images: query a gallery by text, by image, or both, and read an image zero-shot.

The core class behind the app's "Nearest images" tab (the tab only formats what it returns).

    from clipgpt_core import load_bundle
    from clipgpt_core.retrieval.nearest import NearestImages
    finder = NearestImages(load_bundle())
    hits = finder.search(text="a large red star on a black background", k=5)
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from . import local as gallery
from ..world import zeroshot
from ..access import AccessError, ServerFiles
from ..errors import InputError
from ..images import load_image
from ..paths import PACKAGE_PARENT

MAX_K = 200
TEXT_MODES = ("raw", "via prior")   # the CLIP text embedding, or the caption->image-embedding prior
log_ = logging.getLogger(__name__)


class NearestImages:
    def __init__(self, bundle, progress: bool = True, files: ServerFiles = ServerFiles()):
        self.bundle = bundle        # a Bundle, or a LoadingBundle: its CLIP is first read by a search
        self.progress = progress
        self.files = files          # which server folders may be indexed (all, for a local app)
        self._local: dict[str, gallery.LocalIndex] = {}
        self._builtin: Future | None = None       # the built-in gallery, once asked for (maybe still building)
        self._lock = threading.Lock()

    @property
    def clip(self):
        return self.bundle.clip

    # ------------------------------------------------------------------ sources
    def prepare_builtin_index(self) -> Future | None:
        """Start building (or loading) the built-in gallery in a background thread and return at once.

        A first start renders and embeds 5,000 images (about a minute on two cores): an app calls this so it
        answers meanwhile; the first search of the built-in gallery waits for it. None if there is no gallery."""
        with self._lock:
            failed = self._builtin is not None and self._builtin.done() and self._builtin.exception() is not None
            if (self._builtin is None or failed) and self.bundle.gallery is not None:   # a failed build: try again
                self._builtin = future = Future()

                def build():
                    try:
                        future.set_result(gallery.LocalIndex(self._build_builtin()))
                    except BaseException as e:     # handed to whoever waits: builtin_index() raises it
                        future.set_exception(e)
                threading.Thread(target=build, name="builtin-gallery", daemon=True).start()
            return self._builtin

    def _build_builtin(self) -> Path:
        """The built-in gallery's index folder; a missing one is built in a child process (`python -m
        clipgpt_core.retrieval.local --world`), not in this one: rendering 5,000 PNGs in a thread holds the GIL, and
        the app it should leave free to answer took minutes to start. The child runs at a lower priority
        and dies with this process."""
        if self.bundle.path is None:
            return gallery.world_gallery(self.bundle, self.progress)
        return gallery.world_gallery(self.bundle, self.progress, build=self._build_in_child)

    def _build_in_child(self, out_dir: Path, spec: dict) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        log = out_dir / "build.log"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")])))
        cmd = [sys.executable, "-m", "clipgpt_core.retrieval.local", "--world", str(spec["size"]), "--seed",
               str(spec["seed"]), "--bundle", str(self.bundle.path), "--out", str(out_dir)]
        if self.progress:
            log_.warning("building the built-in gallery (%d images) in the background; progress: %s",
                         spec["size"], log)
        with open(log, "w") as err:
            done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env,
                                  preexec_fn=_background_child, check=False)
        if done.returncode != 0:
            # the server's log has the details; world_gallery tells the user, without a traceback or a path
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            log_.error("building the built-in gallery failed (exit %s): %s (log: %s)", done.returncode,
                       " / ".join(tail), log)

    def builtin_index(self) -> gallery.LocalIndex:
        """The bundle's built-in ShapesWorld gallery (built and cached on first use; waits for a build that
        prepare_builtin_index started)."""
        if "gallery" in self._local:
            return self._local["gallery"]
        if self.bundle.gallery is None:
            raise gallery.GalleryError(f"Bundle {self.bundle.name} has no built-in gallery: index a folder "
                                       f"of your images, or use a remote back-end.")
        self._local["gallery"] = self.prepare_builtin_index().result()
        return self._local["gallery"]

    def builtin_ready(self) -> bool:
        """True once the built-in gallery can be searched without waiting."""
        return "gallery" in self._local or (self._builtin is not None and self._builtin.done()
                                            and self._builtin.exception() is None)

    def index_folder(self, folder: str, out_dir: str | None = None) -> gallery.LocalIndex:
        """Index a folder of images with this bundle's CLIP (cached per folder and model). A folder already in
        clip-retrieval's layout (an index, or the embeddings `clip-retrieval inference` wrote, searched
        memory-mapped) is opened as it is: nothing is embedded."""
        if not folder or not str(folder).strip():
            raise gallery.GalleryError("Give the path of a folder of images to index")
        folder = self.files.check(folder)
        index_dir = gallery.existing_index(folder)
        if index_dir is None:
            index_dir = gallery.build_folder_index(self.clip, str(folder), out_dir, self.progress)
        idx = gallery.LocalIndex(index_dir)
        if idx.dim != self.clip.dim:
            raise gallery.GalleryError(f"{index_dir} holds {idx.dim}-d embeddings, this bundle's CLIP makes "
                                       f"{self.clip.dim}-d ones: it was made with another model")
        self._local[f"folder:{folder}"] = idx
        return idx

    def folder_index(self, folder: str) -> gallery.LocalIndex:
        key = f"folder:{self.files.check(folder)}"
        return self._local[key] if key in self._local else self.index_folder(folder)

    # ------------------------------------------------------------------ queries
    def text_embedding(self, text: str, text_mode: str = "raw") -> np.ndarray:
        """The text's CLIP embedding, or (via prior) the image embedding the prior predicts for it."""
        if text_mode not in TEXT_MODES:
            raise InputError(f"text_mode must be one of {TEXT_MODES}, got {text_mode!r}")
        if text_mode == "raw":
            return self.clip.encode_texts([text])[0]
        if self.bundle.embedding_prior is None:
            raise InputError(f"Bundle {self.bundle.name} has no caption->image-embedding prior; train one with "
                             f"`python -m clipgpt_train.embedding_prior` or use the raw text embedding")
        return self.bundle.embedding_prior.predict([text])[0]

    def query_embedding(self, text: str | None = None, image=None, text_weight: float = 0.5,
                        text_mode: str = "raw") -> np.ndarray:
        text = text.strip() if isinstance(text, str) else None
        if not text and image is None:
            raise InputError("Type a text query, give an image, or both")
        t = self.text_embedding(text, text_mode) if text else None
        i = self.clip.encode_images([load_image(image)])[0] if image is not None else None
        return gallery.combine(t, i, float(np.clip(text_weight, 0.0, 1.0)))

    def search(self, text: str | None = None, image=None, text_weight: float = 0.5, k: int = 10,
               folder: str | None = None, text_mode: str = "raw") -> list[gallery.Hit]:
        """Top-k images of the built-in gallery (or of an indexed folder) for the query."""
        k = int(np.clip(k, 1, MAX_K))
        q = self.query_embedding(text, image, text_weight, text_mode)
        idx = self.folder_index(folder) if folder else self.builtin_index()
        return [self._shown(h) for h in idx.search(q, k)]

    def _shown(self, hit: gallery.Hit) -> gallery.Hit:
        """A hit whose image a shared app may not read (an index's metadata can name any server path) keeps
        its similarity and caption but loses its path."""
        if hit.image_path and self.files.allowed is not None:
            try:
                self.files.check(hit.image_path, "image")
            except AccessError:
                return dataclasses.replace(hit, image_path=None)
        return hit

    def search_remote(self, url: str, indice_name: str, text: str | None = None, image=None,
                      text_weight: float = 0.5, k: int = 10, text_mode: str = "raw") -> list[gallery.Hit]:
        """Query a clip-retrieval back-end. Text or image alone go as such (the server encodes
        them with its own CLIP); both together, or text via the prior, go as one embedding from
        this bundle's CLIP, which only makes sense when the server uses the same model."""
        from .remote import RemoteIndex
        remote = RemoteIndex(self.files.check_backend(url), indice_name)
        text = text.strip() if isinstance(text, str) else None
        k = int(np.clip(k, 1, MAX_K))
        if (text and image is not None) or (text and text_mode != "raw"):
            return remote.search(embedding=self.query_embedding(text, image, text_weight, text_mode), k=k)
        if text:
            return remote.search(text=" ".join(self.clip.clean_texts([text])), k=k)
        if image is not None:
            return remote.search(image=load_image(image), k=k)
        raise InputError("Type a text query, give an image, or both")

    def zero_shot(self, image) -> dict[str, dict[str, float]]:
        """Per attribute (colour, shape, size, position, background): value -> probability."""
        emb = self.clip.encode_images([load_image(image)])[0]
        return zeroshot.panel(self.clip, emb)


def _background_child() -> None:
    """In a child process before exec: lower its priority, and end it when its parent ends (Linux)."""
    os.nice(10)
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
