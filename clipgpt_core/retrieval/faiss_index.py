"""faiss indices in clip-retrieval's layout: built with autofaiss as `clip_retrieval.clip_index` builds them,
tuned to a recall target, read memory-mapped as `clip back` reads them, and searched (PQ codes re-ranked from the
embeddings beside them). Small collections stay flat. docs/results.md, Index, has the measurements."""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from ..errors import InputError


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
    budget_bytes = cast_memory_to_bytes(max_index_memory)
    if budget_bytes >= 0.9 * ram:
        raise InputError(f"The index memory budget {max_index_memory} is more than this machine has "
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
        shapes = [np.load(p, mmap_mode="r").shape for p in parts]
        n, dim = sum(r for r, _ in shapes), shapes[0][1]
        if n <= FLAT_MAX:
            keys = ["Flat"]
        elif index_key is not None:
            keys = [index_key]
        else:   # autofaiss's pick, and an IVF-Flat beside it where its vectors fit the budget: the faster one stays
            keys = [None] + ([ivf_flat_key(n)] if 1.1 * n * dim * 4 <= budget_bytes else [])
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
