"""Image galleries indexed in clip-retrieval's own layout, and searched locally with faiss.

    GALLERY/
      images/                      (built-in gallery only: the rendered PNGs)
      embeddings/img_emb/img_emb_0.npy     float16, L2-normalised (as `clip-retrieval inference`)
      embeddings/text_emb/text_emb_0.npy   when captions are known
      embeddings/metadata/metadata_0.parquet   image_path, caption
      index/image.index, index/text.index, index/metadata/   (`clip_retrieval.clip_index` + autofaiss)

The index folder is exactly what `clip-retrieval back` serves (see clipgpt_core.back).

    python -m clipgpt_core.index --folder ~/photos --out ~/photos-index   # your own images
    python -m clipgpt_core.index --world 5000 --out data/gallery           # the built-in gallery
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .errors import ClipGPTError
from .images import BadImageError, load_image

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
DEFAULT_CACHE = Path(os.environ.get("CLIPGPT_CACHE", Path.home() / ".cache" / "clipgpt"))


class GalleryError(ClipGPTError, RuntimeError):
    """A gallery that cannot be built or read; the message says why."""


@dataclass
class Hit:
    id: int
    similarity: float
    image_path: str | None = None
    caption: str | None = None
    image: object = None   # a PIL image, when the source sends pixels (remote back-ends)


def build_index(clip, image_paths: list[str], captions: list[str] | None, out_dir: str | Path,
                progress: bool = True, batch: int = 256) -> Path:
    """Embed images (and captions) and index them with clip-retrieval's `clip_index`.
    Unreadable images are skipped with a warning. Returns the index folder."""
    out_dir = Path(out_dir)
    emb_dir = out_dir / "embeddings"
    if emb_dir.exists():
        shutil.rmtree(emb_dir)
    for sub in ("img_emb", "metadata"):
        (emb_dir / sub).mkdir(parents=True)
    good, good_caps, skipped, embs = [], [], [], []
    for start in tqdm(range(0, len(image_paths), batch), desc="embed images", disable=not progress):
        images = []
        for i in range(start, min(start + batch, len(image_paths))):
            try:
                images.append(load_image(image_paths[i]))   # each file is decoded once
            except BadImageError as e:
                skipped.append(f"{image_paths[i]}: {e}")
                continue
            good.append(str(image_paths[i]))
            if captions is not None:
                good_caps.append(captions[i])
        if images:
            embs.append(clip.encode_images(images))
    for s in skipped:
        logging.warning("skipped %s", s)
    if not good:
        raise GalleryError(f"No readable images to index ({len(skipped)} skipped)")
    img = np.concatenate(embs)
    np.save(emb_dir / "img_emb" / "img_emb_0.npy", img.astype(np.float16))
    if captions is not None:
        (emb_dir / "text_emb").mkdir()
        txt = np.concatenate([clip.encode_texts(good_caps[i:i + batch])
                              for i in tqdm(range(0, len(good_caps), batch), desc="embed captions", disable=not progress)])
        np.save(emb_dir / "text_emb" / "text_emb_0.npy", txt.astype(np.float16))
    import pandas as pd
    pd.DataFrame({"image_path": good, "caption": good_caps if captions is not None else [""] * len(good)}) \
        .to_parquet(emb_dir / "metadata" / "metadata_0.parquet")
    index_dir = out_dir / "index"
    if index_dir.exists():
        shutil.rmtree(index_dir)
    index_dir.mkdir()
    from clip_retrieval.clip_index import clip_index
    clip_index(str(emb_dir), str(index_dir), max_index_memory_usage="1G", current_memory_available="4G",
               nb_cores=max(1, os.cpu_count() or 1))
    (out_dir / "skipped.txt").write_text("\n".join(skipped))
    return index_dir


def folder_images(folder: str | Path) -> list[str]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise GalleryError(f"Not a folder: {folder}")
    paths = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not paths:
        raise GalleryError(f"No images ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {folder}")
    return paths


def build_folder_index(clip, folder, out_dir=None, progress=True) -> Path:
    """Index a folder of the user's images. Default location: the cache, keyed by folder+model."""
    paths = folder_images(folder)
    if out_dir is None:
        key = hashlib.sha1(f"{Path(folder).resolve()}|{clip.fingerprint()}".encode()).hexdigest()[:12]
        out_dir = DEFAULT_CACHE / "folders" / key
    return build_index(clip, paths, None, out_dir, progress=progress)


def build_world_gallery(clip, out_dir, n: int = 5000, seed: int = 0, progress: bool = True) -> Path:
    """The built-in gallery: n reproducible ShapesWorld images (seeds seed..seed+n-1, both seen
    and held-out combinations), saved as PNGs with their captions, then indexed."""
    from . import world
    out_dir = Path(out_dir)
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    paths, captions, scenes = [], [], []
    for i in tqdm(range(n), desc="render gallery", disable=not progress):
        ex = world.example(seed + i, split="any")
        path = img_dir / f"{i:06d}.png"
        if not path.exists():
            ex.image.save(path)
        paths.append(str(path))
        captions.append(ex.caption)
        scenes.append(ex.scene.to_dict())
    (out_dir / "scenes.json").write_text(json.dumps(scenes))
    return build_index(clip, paths, captions, out_dir, progress=progress)


def world_gallery_dir(bundle) -> tuple[Path, dict]:
    """Where the bundle's built-in gallery is cached (its index in index/), and its spec (size, seed)."""
    spec = bundle.gallery or {"kind": "shapesworld", "size": 5000, "seed": 0}
    key = f"{bundle.name}-{spec['size']}-{spec['seed']}-{bundle.clip.fingerprint()}"
    return DEFAULT_CACHE / "galleries" / key, spec


def world_gallery(bundle, progress: bool = True) -> Path:
    """The bundle's built-in gallery index folder, built on first use and cached."""
    out_dir, spec = world_gallery_dir(bundle)
    index_dir = out_dir / "index"
    if not (index_dir / "image.index").exists():
        build_world_gallery(bundle.clip, out_dir, spec["size"], spec["seed"], progress)
    return index_dir


class LocalIndex:
    """A clip-retrieval index folder (image.index + metadata/), searched in-process."""

    def __init__(self, index_dir: str | Path):
        import faiss
        import pandas as pd
        self.dir = Path(index_dir)
        if not (self.dir / "image.index").exists():
            raise GalleryError(f"{self.dir} has no image.index: build it first "
                              f"(python -m clipgpt_core.index --folder ... --out ...)")
        self.faiss_index = faiss.read_index(str(self.dir / "image.index"))
        parts = sorted((self.dir / "metadata").glob("*.parquet"))
        self.metadata = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)

    def __len__(self) -> int:
        return self.faiss_index.ntotal

    def search(self, query: np.ndarray, k: int = 10) -> list[Hit]:
        q = np.asarray(query, np.float32).reshape(1, -1)
        if q.shape[1] != self.faiss_index.d:
            raise GalleryError(f"Query has dimension {q.shape[1]} but the index holds {self.faiss_index.d}-d "
                              f"vectors: it was built with another CLIP model.")
        sims, ids = self.faiss_index.search(q, min(k, len(self)))
        hits = []
        for s, i in zip(sims[0], ids[0]):
            if i < 0:
                continue
            row = self.metadata.iloc[int(i)]
            hits.append(Hit(int(i), float(s), row.get("image_path"), row.get("caption") or None))
        return hits


def combine(text_emb: np.ndarray | None, image_emb: np.ndarray | None, text_weight: float = 0.5) -> np.ndarray:
    """Mix a text and an image query into one unit vector (either may be missing)."""
    if text_emb is None and image_emb is None:
        raise ValueError("Give a text, an image, or both")
    if text_emb is None:
        q = image_emb
    elif image_emb is None:
        q = text_emb
    else:
        q = text_weight * text_emb + (1 - text_weight) * image_emb
    return q / max(np.linalg.norm(q), 1e-12)


def main(argv=None):
    p = argparse.ArgumentParser(description="Build a clip-retrieval index of images with a bundle's CLIP.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--folder", help="a folder of your images (searched recursively)")
    src.add_argument("--world", type=int, metavar="N", help="N ShapesWorld images (the built-in gallery)")
    p.add_argument("--out", help="output folder (default: the cache)")
    p.add_argument("--bundle", default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from .bundle import load_bundle
    bundle = load_bundle(args.bundle)
    if args.folder:
        index_dir = build_folder_index(bundle.clip, args.folder, args.out)
    elif args.out:
        index_dir = build_world_gallery(bundle.clip, args.out, args.world, args.seed)
    else:
        bundle.gallery = {"kind": "shapesworld", "size": args.world, "seed": args.seed}
        index_dir = world_gallery(bundle)
    print(f"index ready: {index_dir}")


if __name__ == "__main__":
    main()
