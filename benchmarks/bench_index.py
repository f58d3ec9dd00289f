"""Nearest at scale: the shipped index path vs exact search, at 1M and 10M vectors.

    python -m benchmarks.bench_index [--sizes 1000000 10000000] [--index-keys auto OPQ64_128,IVF8192_HNSW32,PQ64]
                                     [--dim 128] [--workdir /tmp/bench_index] [--out benchmarks/results/index.json]

For each size: write synthetic embeddings in `clip-retrieval inference`'s layout (img_emb/*.npy float16, 1M
rows a part, + metadata parquet), build the index with clipgpt_core.retrieval.faiss_index.build_faiss_index (autofaiss,
"auto" = its own pick, else the named faiss key; then tuned to TARGET_RECALL), and serve it in a fresh process
exactly as the app does (LocalIndex: the index read memory-mapped, metadata as Arrow). 500 single-vector
queries (how the app queries) give median/p95 latency of LocalIndex.search and recall@10 against exact search;
the baseline is exact inner-product search (faiss.IndexFlatIP over the same vectors, in memory) on the same
queries. The serving process reports its load time and peak resident memory (VmHWM). Vectors are L2-normalised draws around
1,000 random centres (real CLIP embeddings are clustered, which uniform noise is not); queries are fresh draws.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

PART = 1_000_000


def clustered(n: int, dim: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_embeddings(emb_dir: Path, n: int, dim: int, rng, centres) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    for sub in ("img_emb", "metadata"):
        (emb_dir / sub).mkdir(parents=True)
    for j, start in enumerate(range(0, n, PART)):
        np.save(emb_dir / "img_emb" / f"img_emb_{j}.npy", clustered(min(PART, n - start), dim, rng, centres).astype(np.float16))
        pq.write_table(pa.table({"image_path": [f"images/{i}.png" for i in range(start, min(n, start + PART))]}),
                       emb_dir / "metadata" / f"metadata_{j}.parquet")


def serve(index_dir: str, queries: np.ndarray, k: int) -> dict:
    """In a fresh process, as the app: load, then one query at a time through LocalIndex.search."""
    from clipgpt_core.retrieval.local import LocalIndex
    t = time.perf_counter()
    idx = LocalIndex(index_dir)
    load_s = time.perf_counter() - t
    lat, ids = [], []
    for q in queries:
        t = time.perf_counter()
        hits = idx.search(q, k)
        lat.append(time.perf_counter() - t)
        ids.append([h.id for h in hits])
    # VmHWM, not getrusage's ru_maxrss: that one keeps the forking parent's peak across exec
    hwm_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    return {"load_s": load_s, "lat_ms": np.array(lat) * 1000, "ids": ids, "peak_rss_gib": hwm_kib / 2**20}


def bench(n: int, key: str, dim: int, n_queries: int, k: int, workdir: Path, seed: int) -> dict:
    import faiss
    from clipgpt_core.retrieval.faiss_index import build_faiss_index
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    shutil.rmtree(workdir, ignore_errors=True)
    emb_dir = workdir / "embeddings"
    write_embeddings(emb_dir, n, dim, rng, centres)
    queries = clustered(n_queries, dim, rng, centres)
    t0 = time.time()
    index_dir = build_faiss_index(emb_dir, workdir / "index", index_key=None if key == "auto" else key)
    build_s = time.time() - t0
    infos = json.loads((index_dir / "image.json").read_text())
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        served = pool.apply(serve, (str(index_dir), queries, k))
    exact = faiss.IndexFlatIP(dim)                       # the baseline, in memory (5 GiB at 10M x 128)
    for p in sorted((emb_dir / "img_emb").glob("*.npy")):
        exact.add(np.load(p).astype(np.float32))
    _, truth = exact.search(queries, k)                  # batched: the ground truth for every query
    n_timed = 500 if n <= PART else 50                   # exact single queries take ~1 s each at 10M
    lat_e = []
    for q in queries[:n_timed]:
        t = time.perf_counter()
        exact.search(q[None], k)
        lat_e.append((time.perf_counter() - t) * 1000)
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(served["ids"], truth)]))
    lat = served["lat_ms"]
    disk = sum(f.stat().st_size for f in index_dir.rglob("*") if f.is_file())
    shutil.rmtree(workdir)
    return {"vectors": n, "dim": dim, "index_key": infos.get("index_key"), "index_param": infos.get("index_param"),
            "build_seconds": round(build_s, 1), "index_on_disk_gib": round(disk / 2**30, 3),
            "serve_load_seconds": round(served["load_s"], 2), "serve_peak_rss_gib": round(served["peak_rss_gib"], 2),
            "latency_ms_median": {"index": round(float(np.median(lat)), 3), "exact": round(float(np.median(lat_e)), 3)},
            "latency_ms_p95": {"index": round(float(np.percentile(lat, 95)), 3),
                               "exact": round(float(np.percentile(lat_e, 95)), 3)},
            "exact_queries_timed": n_timed,
            "speedup_vs_exact": round(float(np.median(lat_e) / np.median(lat)), 1),
            f"recall@{k}_vs_exact": round(recall, 4), f"tuned_recall@{k}": infos.get(f"tuned_recall@{k}"),
            "candidates": infos.get("candidates")}    # each built and tuned; query_ms: the index alone, at tuning


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[PART, 10 * PART])
    p.add_argument("--index-keys", nargs="+", default=["auto", "OPQ64_128,IVF8192_HNSW32,PQ64"],
                   help="one per size: 'auto' (autofaiss's pick) or a faiss factory string")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--workdir", default="/tmp/bench_index")
    p.add_argument("--out", default="benchmarks/results/index.json")
    args = p.parse_args()
    if len(args.index_keys) != len(args.sizes):
        p.error("give one --index-keys entry per size")
    results = {"command": " ".join(["python -m", __spec__.name, *sys.argv[1:]]), "threads": os.cpu_count(),
               "runs": []}
    for n, key in zip(args.sizes, args.index_keys):
        results["runs"].append(bench(n, key, args.dim, args.queries, args.k, Path(args.workdir), seed=n))
        print(json.dumps(results["runs"][-1]), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
