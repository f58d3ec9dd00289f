"""Image galleries indexed in clip-retrieval's own layout, and searched locally with faiss.

    GALLERY/
      images/                      (built-in gallery only: the rendered PNGs)
      embeddings/img_emb/img_emb_0.npy     float16, L2-normalised (as `clip-retrieval inference`)
      embeddings/text_emb/text_emb_0.npy   when captions are known
      embeddings/metadata/metadata_0.parquet   image_path, caption
      index/image.index, index/text.index, index/metadata/   (autofaiss, as `clip_retrieval.clip_index`; flat when small)

The index folder is exactly what `clip-retrieval back` serves (see clipgpt_core.retrieval.serve).

    clipgpt index --folder ~/photos --out ~/photos-index   # your own images (clipgpt_core.retrieval.embed: any scale)
    clipgpt index --world 5000 --out data/gallery           # the built-in gallery
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import ClipGPTError, InputError
from ..images import IMAGE_SUFFIXES, BadImageError, load_image
from .faiss_index import (FLAT_MAX, TARGET_RECALL, build_faiss_index, exact_top_k, load_faiss_index, read_rows,
                          search_index)

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
    (out_dir / "skipped.txt").write_text("\n".join(skipped))
    return build_faiss_index(emb_dir, out_dir / "index")


def existing_index(folder: str | Path) -> Path | None:
    """A folder already in clip-retrieval's layout, or None: an index folder (image.index + metadata/), an
    embeddings folder (`clip-retrieval inference`'s img_emb/ + metadata/), or what `clipgpt index --out`
    writes around them (OUT/index, OUT/embeddings); the index first."""
    folder = Path(folder)
    for d in (folder, folder / "index", folder / "embeddings"):
        if (d / "metadata").is_dir() and ((d / "image.index").is_file() or (d / "img_emb").is_dir()):
            return d
    return None


def folder_images(folder: str | Path) -> list[str]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise GalleryError(f"Not a folder: {folder}")
    paths = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise GalleryError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
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
    from .. import world
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
    (out_dir / READY).unlink(missing_ok=True)
    index_dir = build_index(clip, paths, captions, out_dir, progress=progress)
    (out_dir / READY).write_text("built\n")
    return index_dir


def world_gallery_dir(bundle) -> tuple[Path, dict]:
    """Where the bundle's built-in gallery is cached (its index in index/), and its spec (size, seed)."""
    spec = bundle.gallery or {"kind": "shapesworld", "size": 5000, "seed": 0}
    key = f"{bundle.name}-{spec['size']}-{spec['seed']}-{bundle.clip.fingerprint()}"
    return DEFAULT_CACHE / "galleries" / key, spec


READY = "READY"     # written last into a gallery folder: what a reader takes as "the build finished"


@contextlib.contextmanager
def _build_lock(out_dir: Path):
    """One builder of `out_dir` at a time across processes (two apps on one cache): an exclusive flock on a file
    beside it, held while building. Whoever comes second waits, then finds the finished gallery. The kernel
    drops the lock of a process that dies, so a killed build leaves no stale lock."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f"{out_dir.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ready(out_dir: Path) -> bool:
    return (out_dir / READY).is_file() and (out_dir / "index" / "image.index").is_file()


def world_gallery(bundle, progress: bool = True, build=None) -> Path:
    """The bundle's built-in gallery index folder, built on first use and cached. One process builds it at a time
    (a second one on the same cache waits, then finds it built). build(out_dir, spec) says how (default: here,
    build_world_gallery); a build that leaves no finished gallery raises GalleryError, and the next call tries again."""
    out_dir, spec = world_gallery_dir(bundle)
    with _build_lock(out_dir):
        if not _ready(out_dir):
            if build is None:
                build_world_gallery(bundle.clip, out_dir, spec["size"], spec["seed"], progress)
            else:
                build(out_dir, spec)
            if not _ready(out_dir):
                raise GalleryError("Building the built-in gallery failed; the next search tries again "
                                   "(the server's log says why)")
    return out_dir / "index"


class LocalIndex:
    """A clip-retrieval index folder (image.index + metadata/), or an embeddings folder as
    `clip-retrieval inference` writes it (img_emb/*.npy + metadata/), searched in-process. An
    embeddings folder is searched exactly over memory-mapped parts: a million images need their
    embeddings on disk, not in memory, and no images at all. An index folder with that embeddings folder
    beside it (as `clipgpt index --out` writes them) has its lossy (PQ) results re-ranked exactly from it."""

    def __init__(self, index_dir: str | Path):
        self.dir = Path(index_dir)
        self.faiss_index, self.parts = None, []
        if (self.dir / "image.index").exists():
            self.faiss_index = load_faiss_index(self.dir / "image.index")
        for emb in (self.dir / "img_emb", self.dir.parent / "embeddings" / "img_emb"):
            if emb.is_dir():
                self.parts = [np.load(p, mmap_mode="r") for p in sorted(emb.glob("*.npy"))]
                break
        if self.faiss_index is None and not self.parts:
            raise GalleryError(f"{self.dir} has no image.index (nor img_emb/*.npy): build it first "
                               f"(clipgpt index --folder ... --out ...)")
        # Arrow, not pandas: 10M rows are a few hundred MB of column buffers, not 10M Python objects. One
        # contiguous table per file: take() on a many-chunk table first joins the chunks (175 ms a query at 10M)
        import pyarrow as pa
        import pyarrow.parquet as pq
        self._parts_meta = [pq.read_table(p).combine_chunks() for p in sorted((self.dir / "metadata").glob("*.parquet"))]
        self._meta_starts = np.cumsum([0] + [t.num_rows for t in self._parts_meta])
        self.metadata = pa.concat_tables(self._parts_meta)          # the whole columns, for reads of all rows
        self.dim = self.faiss_index.d if self.faiss_index is not None else self.parts[0].shape[1]

    def __len__(self) -> int:
        return self.faiss_index.ntotal if self.faiss_index is not None else sum(len(p) for p in self.parts)

    def search(self, query: np.ndarray, k: int = 10) -> list[Hit]:
        q = np.asarray(query, np.float32).reshape(1, -1)
        if q.shape[1] != self.dim:
            raise GalleryError(f"Query has dimension {q.shape[1]} but the index holds {self.dim}-d "
                               f"vectors: it was built with another CLIP model.")
        k = min(k, len(self))
        sims, ids = (search_index(self.faiss_index, self.parts, q, k) if self.faiss_index is not None
                     else exact_top_k(self.parts, q, k))
        keep = ids[0] >= 0
        rows = self.metadata_rows(ids[0][keep])
        return [Hit(int(i), float(s), row.get("image_path"), row.get("caption") or None)
                for s, i, row in zip(sims[0][keep], ids[0][keep], rows)]

    def metadata_rows(self, ids: np.ndarray) -> list[dict]:
        """The metadata rows of these ids, each read from its own file's table."""
        ids = np.asarray(ids, dtype=np.int64)
        out: list = [None] * len(ids)
        part = np.searchsorted(self._meta_starts, ids, "right") - 1
        for j in np.unique(part):
            sel = np.nonzero(part == j)[0]
            for at, row in zip(sel, self._parts_meta[j].take(ids[sel] - self._meta_starts[j]).to_pylist()):
                out[at] = row
        return out

    def embeddings_for(self, paths: list[str]) -> np.ndarray:
        """(N, D) float32: the embeddings folder's rows for these images, matched by the path its metadata
        records (or the same file's resolved path), read from the memory-mapped parts: no image is opened,
        and only these rows are read."""
        if not self.parts:
            raise GalleryError(f"{self.dir} is an index folder; give the embeddings folder that `clip-retrieval "
                               f"inference` (or `clipgpt index`) wrote beside it (the one with img_emb/)")
        keys = [str(k) for k in self.metadata.column("image_path").to_pylist()]
        row_of = {k: i for i, k in enumerate(keys)}
        rows = [row_of.get(str(p)) for p in paths]
        if any(r is None for r in rows):               # then by resolved path (relative metadata, symlinks)
            resolved = {str(Path(k).resolve()): i for i, k in enumerate(keys)}
            rows = [resolved.get(str(Path(p).resolve())) if r is None else r for p, r in zip(paths, rows)]
        missing = [p for p, r in zip(paths, rows) if r is None]
        if missing:
            raise InputError(f"{len(missing)} of {len(paths)} images are not in the embeddings folder {self.dir} "
                             f"(e.g. {missing[0]}); its metadata names images like {keys[0] if keys else '(none)'}")
        return read_rows(self.parts, rows)


def combine(text_emb: np.ndarray | None, image_emb: np.ndarray | None, text_weight: float = 0.5) -> np.ndarray:
    """Mix a text and an image query into one unit vector (either may be missing)."""
    if text_emb is None and image_emb is None:
        raise InputError("Give a text, an image, or both")
    if text_emb is None:
        q = image_emb
    elif image_emb is None:
        q = text_emb
    else:
        q = text_weight * text_emb + (1 - text_weight) * image_emb
    return q / max(np.linalg.norm(q), 1e-12)


def main(argv=None):
    p = argparse.ArgumentParser(prog="clipgpt index", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--folder", help="a folder of images (searched recursively), or webdataset shards "
                                      "(with --input-format webdataset, e.g. 'shards/{00000..00099}.tar')")
    src.add_argument("--world", type=int, metavar="N", help="N ShapesWorld images (the built-in gallery)")
    p.add_argument("--out", help="output folder (default: the cache)")
    p.add_argument("--bundle", default=None, help="built-in name, bundle directory, or open_clip:ARCH/TAG")
    p.add_argument("--seed", type=int, default=0, help="--world: the first image's seed")
    p.add_argument("--distribution-strategy", choices=["sequential", "pyspark"], default="sequential",
                   help="--folder: clip-retrieval inference in this process, or on Spark (the active session, "
                        "else local[--spark-workers])")
    p.add_argument("--input-format", choices=["files", "webdataset"], default="files")
    p.add_argument("--max-index-memory", default="4G",
                   help=f"memory budget of the index beyond {FLAT_MAX:,} vectors (smaller ones are flat)")
    p.add_argument("--index-key", default=None,
                   help="a faiss index factory string instead of autofaiss's pick, e.g. 'OPQ32_128,IVF16384_HNSW32,PQ32' "
                        "(autofaiss trains 65,536 centroids for 10M vectors: hours on a small machine)")
    p.add_argument("--target-recall", type=float, default=TARGET_RECALL,
                   help="recall@10 against exact search the index is tuned to (the fastest setting that reaches it)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-prepro-workers", type=int, default=2, help="image-decoding processes per worker")
    p.add_argument("--write-batch-size", type=int, default=10**6, help="images per output partition (Spark task)")
    p.add_argument("--spark-workers", type=int, default=None, help="cores of a local Spark (default: all)")
    args = p.parse_args(argv)
    from ..bundle import load_bundle
    try:
        bundle = load_bundle(args.bundle)
        if args.folder:
            if args.out is None:
                p.error("--folder needs --out")
            from .embed import embed_with_clip_retrieval
            emb_dir = embed_with_clip_retrieval(
                bundle, args.folder, args.out, args.distribution_strategy, args.input_format, args.batch_size,
                args.num_prepro_workers, args.write_batch_size, args.spark_workers)
            index_dir = build_faiss_index(emb_dir, Path(args.out).expanduser() / "index", args.max_index_memory,
                                          args.index_key, args.target_recall)
        elif args.out:
            index_dir = build_world_gallery(bundle.clip, args.out, args.world, args.seed)
        else:
            bundle.gallery = {"kind": "shapesworld", "size": args.world, "seed": args.seed}
            index_dir = world_gallery(bundle)
    except ClipGPTError as e:
        p.exit(2, f"clipgpt index: {e}\n")
    print(f"index ready: {index_dir}")


if __name__ == "__main__":
    main()
