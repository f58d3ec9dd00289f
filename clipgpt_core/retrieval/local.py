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
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import ClipGPTError, InputError
from ..images import IMAGE_SUFFIXES, BadImageError, load_image

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


# Up to this many vectors an exact (flat) index is the fastest; beyond it autofaiss picks one
# (python -m benchmarks.bench_index; docs/results.md, Index).
FLAT_MAX = 50_000
# What a built index is tuned to: recall@10 against exact search. autofaiss alone tunes for a time budget
# (10 ms a query) and spends it (docs/results.md, Index).
TARGET_RECALL = 0.95
# The one knob per index family, swept from fast to exact. IVF indices also search their HNSW quantizer
# (efSearch = 2 x nprobe, as clip_retrieval's back-end sets it).
_SWEEPS = {"efSearch": [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024],
           "nprobe": [1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024, 2048, 4096]}


def _autofaiss_with_opq():
    """autofaiss 2.18 builds its OPQ indices with faiss.OPQMatrix(d, M=.., d2=..), keywords faiss 1.15's bindings
    refuse: every index it picks past ~5M vectors (and any OPQ key) would fail with a TypeError. Its factory
    module, and only it, gets a faiss whose OPQMatrix takes them."""
    import types

    import faiss
    from autofaiss.indices import index_factory
    if getattr(index_factory.faiss, "_clipgpt_opq", False):
        return
    shim = types.ModuleType("faiss")
    shim.__dict__.update(faiss.__dict__)
    shim.OPQMatrix = lambda d, M=1, d2=-1: faiss.OPQMatrix(d, M, d2)
    shim._clipgpt_opq = True
    index_factory.faiss = shim


def build_faiss_index(emb_dir: str | Path, index_dir: str | Path, max_index_memory: str = "4G",
                      index_key: str | None = None, target_recall: float = TARGET_RECALL) -> Path:
    """What `clip_retrieval.clip_index` does (autofaiss over embeddings/{img_emb,text_emb}, metadata
    copied), except that small indices are flat and approximate ones are tuned to target_recall.
    max_index_memory bounds the index autofaiss picks beyond FLAT_MAX vectors (e.g. "4G"); index_key
    names one instead (a faiss factory string, e.g. "OPQ32_128,IVF16384_HNSW32,PQ32": autofaiss's own pick
    for 10M vectors trains 65,536 centroids, hours on two cores). Returns index_dir."""
    from autofaiss import build_index
    from autofaiss.utils.cast import cast_memory_to_bytes
    emb_dir, index_dir = Path(emb_dir), Path(index_dir)
    _autofaiss_with_opq()
    # autofaiss wants the budget below what the machine has (its own default, 32G, is more than many have)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if cast_memory_to_bytes(max_index_memory) >= 0.9 * ram:
        raise GalleryError(f"The index memory budget {max_index_memory} is more than this machine has "
                           f"({ram / 2**30:.0f} GiB); give a smaller --max-index-memory")
    if index_key is not None:
        import faiss
        from autofaiss.indices.index_factory import index_factory
        first = next(iter(sorted((emb_dir / "img_emb").glob("*.npy"))), None)
        try:      # autofaiss's factory: it refuses keys that faiss would build wrongly for inner product
            index_factory(np.load(first, mmap_mode="r").shape[1] if first else 512, index_key,
                          faiss.METRIC_INNER_PRODUCT)
        except (RuntimeError, ValueError) as e:
            raise InputError(f"--index-key {index_key!r} is not a faiss index factory string autofaiss builds "
                             f"for inner product (e.g. 'OPQ32_128,IVF16384_HNSW32,PQ32', 'IVF4096,Flat', "
                             f"'HNSW32'): {str(e).splitlines()[-1][:160]}") from None
    if index_dir.exists():
        shutil.rmtree(index_dir)
    index_dir.mkdir(parents=True)
    for kind, sub in (("image", "img_emb"), ("text", "text_emb")):
        parts = sorted((emb_dir / sub).glob("*.npy"))
        if not parts:
            continue
        n, dim = sum(np.load(p, mmap_mode="r").shape[0] for p in parts), np.load(parts[0], mmap_mode="r").shape[1]
        if n <= FLAT_MAX:
            keys = ["Flat"]
        elif index_key is not None:
            keys = [index_key]
        else:   # autofaiss's pick, and an IVF-Flat beside it where its vectors fit the budget: the faster one stays
            keys = [None] + ([ivf_flat_key(n)] if 1.1 * n * dim * 4 <= cast_memory_to_bytes(max_index_memory) else [])
        budget = dict(max_index_memory_usage=max_index_memory, current_memory_available=f"{int(0.9 * ram) >> 20}M",
                      nb_cores=max(1, os.cpu_count() or 1), verbose=logging.WARNING)
        tried = []
        for i, key in enumerate(keys):
            path = index_dir / f"{kind}.{i}.index"
            build_index(str(emb_dir / sub), index_path=str(path), index_infos_path=str(path.with_suffix(".json")),
                        index_key=key, **budget)
            tried.append((tune_index_file(path, parts, target_recall) if key != "Flat" else {}, path))
        _keep_fastest(tried, index_dir, kind, target_recall)
    shutil.copytree(emb_dir / "metadata", index_dir / "metadata")
    return index_dir


def _keep_fastest(tried: list[tuple[dict, Path]], index_dir: Path, kind: str, target_recall: float) -> None:
    """Of the (infos, path) built, keep the fastest that reaches the target (short of it, the nearest) as
    KIND.index / KIND.json, the candidates listed in its infos; remove the others."""
    def rank(t):
        recall = t[0].get("tuned_recall@10", 1.0)
        return (0, t[0].get("query_ms", 0.0)) if recall >= target_recall else (1, -recall)
    infos, best = min(tried, key=rank)
    if len(tried) > 1:
        infos["candidates"] = [{k: t.get(k) for k in ("index_key", "index_param", "query_ms", "tuned_recall@10")}
                               for t, _ in tried]
        best.with_suffix(".json").write_text(json.dumps(infos, indent=2))
    for _, path in tried:
        if path == best:
            path.rename(index_dir / f"{kind}.index")
            path.with_suffix(".json").rename(index_dir / f"{kind}.json")
        else:
            path.unlink()
            path.with_suffix(".json").unlink(missing_ok=True)


def exact_top_k(parts: list[np.ndarray], queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k) similarities and int64 ids: exact inner-product top-k over memory-mapped (N_i, D) parts, a
    slice at a time (a 10M-row collection never sits in memory)."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    offset = 0
    for part in parts:
        for start in range(0, len(part), 262144):
            s = queries @ np.asarray(part[start:start + 262144], np.float32).T          # (Q, slice)
            i = np.broadcast_to(np.arange(s.shape[1]) + offset + start, s.shape)
            s, i = np.concatenate([best_s, s], axis=1), np.concatenate([best_i, i], axis=1)
            top = np.argpartition(-s, min(k, s.shape[1]) - 1, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
        offset += len(part)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)


def read_rows(parts: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
    """(len(rows), D) float32: these global rows of the memory-mapped parts; only they are read."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), parts[0].shape[1]), np.float32)
    start = 0
    for part in parts:                                   # each part reads just the rows that fall in it, in order
        inside = (rows >= start) & (rows < start + len(part))
        if inside.any():
            local = rows[inside] - start
            order = np.argsort(local)
            got = np.empty((len(local), out.shape[1]), np.float32)
            got[order] = part[local[order]]
            out[inside] = got
        start += len(part)
    return out


# A PQ-coded index ranks by lossy codes; its top RERANK x k are re-scored exactly from the embeddings that
# `clip-retrieval inference` wrote beside it (memory-mapped: a few hundred rows read a query).
RERANK = 10


def is_lossy(index) -> bool:
    """Whether the index ranks by compressed codes (IVF-PQ) rather than the vectors (Flat, HNSW, IVF-Flat)."""
    import faiss
    ivf = faiss.try_extract_index_ivf(index)
    return ivf is not None and ivf.code_size < 4 * ivf.d


def search_index(index, parts: list[np.ndarray], queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, k) similarities and ids from a faiss index, re-ranked exactly over `parts` when its codes are lossy
    and the embeddings are at hand (ids -1 where fewer than k were found)."""
    if not parts or not is_lossy(index):
        return index.search(queries, k)
    _, cand = index.search(queries, k * RERANK)
    sims, ids = np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
    for j, (q, c) in enumerate(zip(queries, cand)):
        c = c[c >= 0]
        s = read_rows(parts, c) @ q
        top = np.argsort(-s)[:k]
        sims[j, :len(top)], ids[j, :len(top)] = s[top], c[top]
    return sims, ids


def tuning_queries(parts: list[np.ndarray], n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) queries and their (n,) global rows: indexed vectors drawn at random, each asked for its neighbours
    with itself left out (leave-one-out: queries from the collection's own distribution)."""
    rng = np.random.default_rng(seed)
    sizes = np.array([len(p) for p in parts])
    rows = np.sort(rng.choice(sizes.sum(), size=min(n, sizes.sum()), replace=False))
    return read_rows(parts, rows), rows


def _without(ids: np.ndarray, own: np.ndarray, k: int) -> list[list[int]]:
    """Each row's ids with the query's own row left out, the first k."""
    return [[int(i) for i in r if i != o][:k] for r, o in zip(ids, own)]


def tune_search(index, queries: np.ndarray, own: np.ndarray, parts: list[np.ndarray],
                target_recall: float = TARGET_RECALL, k: int = 10) -> tuple[str, float]:
    """The fastest setting of the index's one search knob (efSearch for HNSW, nprobe for IVF) whose recall@k
    against exact search over `parts` reaches target_recall for these queries (indexed vectors, rows `own`,
    left out of their own results), searched as LocalIndex searches (re-ranked over `parts` when lossy);
    applied to the index. Returns (faiss parameter string, its recall); the most exact setting when none
    reaches it."""
    import faiss
    ivf = faiss.try_extract_index_ivf(index)
    knob = "nprobe" if ivf is not None else "efSearch"
    values = [v for v in _SWEEPS[knob] if ivf is None or v <= ivf.nlist]
    truth = _without(exact_top_k(parts, queries, k + 1)[1], own, k)
    ps = faiss.ParameterSpace()
    for v in values:
        param = f"nprobe={v},efSearch={2 * v}" if knob == "nprobe" else f"efSearch={v}"
        if knob == "nprobe" and not isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSW):
            param = f"nprobe={v}"
        ps.set_index_parameters(index, param)
        found = _without(search_index(index, parts, queries, k + 1)[1], own, k)
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)]))
        if recall >= target_recall:
            break
    return param, recall


def ivf_flat_key(n: int) -> str:
    """An IVF-Flat index for n vectors: ~4 sqrt(n) lists (a power of two), faiss's rule of thumb."""
    return f"IVF{2 ** int(round(np.log2(4 * np.sqrt(n))))},Flat"


def tune_index_file(path: Path, parts: list[Path], target_recall: float = TARGET_RECALL, k: int = 10) -> dict:
    """Tune a built index to target_recall on its own vectors as queries (leave-one-out), re-ranked over them
    as LocalIndex does when they sit beside the index; the setting is saved in the index file (faiss keeps
    efSearch and nprobe) and in autofaiss's infos JSON beside it (index_param, and query_ms: the median time
    of one query at that setting, on this machine). Returns the infos."""
    import faiss
    index = faiss.read_index(str(path))
    vectors = [np.load(p, mmap_mode="r") for p in parts]
    queries, own = tuning_queries(vectors)
    param, recall = tune_search(index, queries, own, vectors, target_recall, k)
    times = []
    for q in queries[:100]:                              # one at a time, as the app asks
        t = time.perf_counter()
        search_index(index, vectors, q[None], k)
        times.append(time.perf_counter() - t)
    faiss.write_index(index, str(path))
    infos_path = path.with_suffix(".json")
    infos = json.loads(infos_path.read_text()) if infos_path.exists() else {}
    infos.update(index_param=param, query_ms=round(1000 * float(np.median(times)), 3),
                 **{f"tuned_recall@{k}": round(recall, 4), "target_recall": target_recall})
    infos_path.write_text(json.dumps(infos, indent=2))
    return infos


def load_faiss_index(path: str | Path):
    """A faiss index read as `clip-retrieval back` reads it with memory mapping on: IVF lists stay on disk and
    are paged in as searched (a 10M-vector index answers without loading it), with the tuned search setting
    from the infos JSON beside it applied."""
    import faiss
    path = Path(path)
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    infos_path = path.with_suffix(".json")
    param = json.loads(infos_path.read_text()).get("index_param") if infos_path.exists() else None
    if param:
        faiss.ParameterSpace().set_index_parameters(index, param)
    return index


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
