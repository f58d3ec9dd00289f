"""Index benchmark: the autofaiss index that `clip_retrieval.clip_index` builds vs exact search.

    python -m benchmarks.bench_index [--sizes 10000 1000000] [--dim 128] [--out benchmarks/results/index.json]

For each size: build the index the way clip-retrieval does (autofaiss.build_index with the same
memory settings as clipgpt_core.retrieval.local), then for 500 single-vector queries (how the app queries)
report median/p95 latency of the autofaiss index and of exact inner-product search
(faiss.IndexFlatIP, the baseline), their ratio, and recall@10 of the index against exact search.
Vectors are synthetic: L2-normalised draws around 1,000 random centres (real CLIP embeddings are
clustered, which uniform noise is not); queries are fresh draws from the same mixture.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def clustered(n: int, dim: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def timed_search(index, queries: np.ndarray, k: int):
    lat, ids = [], []
    for q in queries:
        t = time.perf_counter()
        _, i = index.search(q[None], k)
        lat.append(time.perf_counter() - t)
        ids.append(i[0])
    return np.array(lat) * 1000, np.array(ids)


def bench(n: int, dim: int, n_queries: int, k: int, seed: int) -> dict:
    import faiss
    from autofaiss import build_index
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    xb = np.concatenate([clustered(min(100_000, n - i), dim, rng, centres) for i in range(0, n, 100_000)])
    xq = clustered(n_queries, dim, rng, centres)
    with tempfile.TemporaryDirectory() as tmp:
        emb_dir = Path(tmp) / "img_emb"
        emb_dir.mkdir()
        np.save(emb_dir / "img_emb_0.npy", xb.astype(np.float16))  # as clip-retrieval inference writes
        t0 = time.time()
        build_index(embeddings=str(emb_dir), index_path=f"{tmp}/image.index", index_infos_path=f"{tmp}/image.json",
                    max_index_memory_usage="1G", current_memory_available="4G", nb_cores=os.cpu_count(),
                    verbose=30)
        build_s = time.time() - t0
        index = faiss.read_index(f"{tmp}/image.index")
        infos = json.loads(Path(f"{tmp}/image.json").read_text())
    exact = faiss.IndexFlatIP(dim)
    exact.add(xb.astype(np.float16).astype(np.float32))
    lat_a, ids_a = timed_search(index, xq, k)
    lat_e, ids_e = timed_search(exact, xq, k)
    recall = float(np.mean([len(set(a) & set(e)) / k for a, e in zip(ids_a, ids_e)]))
    return {"vectors": n, "dim": dim, "index": infos.get("index_key", type(index).__name__),
            "build_seconds": round(build_s, 1),
            "latency_ms_median": {"autofaiss": round(float(np.median(lat_a)), 3), "exact": round(float(np.median(lat_e)), 3)},
            "latency_ms_p95": {"autofaiss": round(float(np.percentile(lat_a, 95)), 3), "exact": round(float(np.percentile(lat_e, 95)), 3)},
            "speedup_vs_exact": round(float(np.median(lat_e) / np.median(lat_a)), 2),
            f"recall@{k}_vs_exact": round(recall, 4)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--out", default="benchmarks/results/index.json")
    args = p.parse_args()
    results = {"command": " ".join(["python -m", __spec__.name, *sys.argv[1:]]), "threads": os.cpu_count(),
               "runs": [bench(n, args.dim, args.queries, args.k, seed=n) for n in args.sizes]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
