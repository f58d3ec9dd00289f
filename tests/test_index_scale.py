"""Past FLAT_MAX vectors the index is approximate (autofaiss's pick, or a named faiss key), tuned to the recall
target rather than autofaiss's time budget, and read memory-mapped as `clip-retrieval back` reads it."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipgpt_core.errors import InputError
from clipgpt_core.retrieval import faiss_index
from clipgpt_core.retrieval.faiss_index import build_faiss_index, exact_top_k
from clipgpt_core.retrieval.local import LocalIndex

DIM = 32


def clustered(n, rng, centres):
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, DIM)) / np.sqrt(DIM)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    """clip-retrieval inference's layout: OUT/embeddings/img_emb/*.npy (float16, two parts) + metadata/*.parquet;
    the tests build their indices beside it (OUT/<name>), as `clipgpt index --out OUT` does."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((200, DIM))
    x = clustered(faiss_index.FLAT_MAX + 10_000, rng, centres)
    d = tmp_path_factory.mktemp("out") / "embeddings"
    (d / "img_emb").mkdir(parents=True)
    (d / "metadata").mkdir()
    half = len(x) // 2
    np.save(d / "img_emb" / "img_emb_0.npy", x[:half].astype(np.float16))
    np.save(d / "img_emb" / "img_emb_1.npy", x[half:].astype(np.float16))
    for j, rows in enumerate((range(half), range(half, len(x)))):        # one metadata file a part, as inference writes
        pq.write_table(pa.table({"image_path": [f"img/{i}.png" for i in rows]}), d / "metadata" / f"m_{j}.parquet")
    return d, x.astype(np.float16).astype(np.float32), clustered(100, rng, centres)


@pytest.mark.parametrize("key", [None, "IVF256,Flat"])
def test_approximate_index_is_tuned_to_the_recall_target_and_read_mapped(embeddings, key):
    """None: autofaiss's pick (HNSW32 here) and an IVF-Flat are both built and tuned; the faster at the target
    stays, the other is gone. A named key is built alone."""
    emb_dir, x, queries = embeddings
    out = build_faiss_index(emb_dir, emb_dir.parent / f"index-{key}", index_key=key)
    infos = json.loads((out / "image.json").read_text())
    assert infos["tuned_recall@10"] >= faiss_index.TARGET_RECALL and infos["query_ms"] > 0
    assert sorted(f.name for f in out.iterdir()) == ["image.index", "image.json", "metadata"]
    if key is None:
        tried = {c["index_key"]: c for c in infos["candidates"]}
        assert set(tried) == {"HNSW32", faiss_index.ivf_flat_key(len(x))}
        fastest = min((c for c in tried.values() if c["tuned_recall@10"] >= faiss_index.TARGET_RECALL),
                      key=lambda c: c["query_ms"])
        assert infos["index_key"] == fastest["index_key"] and infos["index_param"] == fastest["index_param"]
    else:
        assert infos["index_key"] == key and infos["index_param"].startswith("nprobe=") and "candidates" not in infos
    idx = LocalIndex(out)
    truth = exact_top_k([x], queries, 10)[1]                     # fresh queries, not the tuning ones
    found = np.array([[h.id for h in idx.search(q, k=10)] for q in queries])
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
    assert recall >= 0.9, recall
    hits = [h for q in queries[:20] for h in idx.search(q, k=10)]
    assert all(h.image_path == f"img/{h.id}.png" for h in hits)             # metadata read from the right file
    assert {h.id < len(x) // 2 for h in hits} == {True, False}


def test_exact_top_k_matches_a_full_sort():
    rng = np.random.default_rng(1)
    parts = [rng.standard_normal((n, 8)).astype(np.float32) for n in (300, 1, 700)]
    q = rng.standard_normal((5, 8)).astype(np.float32)
    full = np.argsort(-(q @ np.concatenate(parts).T), axis=1)[:, :7]
    sims, ids = exact_top_k(parts, q, 7)
    assert (ids == full).all() and np.allclose(sims, np.take_along_axis(q @ np.concatenate(parts).T, full, 1))


def test_a_bad_index_key_is_refused_before_anything_is_built(embeddings, tmp_path):
    with pytest.raises(InputError, match="not a faiss index factory string autofaiss builds"):
        build_faiss_index(embeddings[0], tmp_path / "index", index_key="IVFbanana")
    assert not (tmp_path / "index").exists()


def test_autofaiss_opq_family_builds_and_is_re_ranked_from_the_embeddings_beside_it(embeddings):
    """The family autofaiss picks past ~5M vectors (OPQ + IVF with an HNSW quantizer + PQ; its factory needs
    our shim on this faiss). Coarse 16-byte codes alone miss most true neighbours here; re-scoring their top
    candidates from the memory-mapped embeddings beside the index brings recall back."""
    emb_dir, x, queries = embeddings
    out = build_faiss_index(emb_dir, emb_dir.parent / "index-opq", index_key="OPQ16_32,IVF64_HNSW16,PQ16")
    infos = json.loads((out / "image.json").read_text())
    assert infos["index_param"].startswith("nprobe=") and infos["tuned_recall@10"] >= 0.5
    idx = LocalIndex(out)
    truth = exact_top_k([x], queries, 10)[1]

    def recall():
        found = [[h.id for h in idx.search(q, k=10)] for q in queries]
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
    re_ranked = recall()
    idx.parts = []                                            # the index folder alone, as clip-retrieval serves it
    codes_only = recall()
    assert re_ranked >= 0.5 and re_ranked > 3 * codes_only, (re_ranked, codes_only)
    hits = idx.search(queries[0], k=10)
    assert len(hits) == 10 and all(h.image_path == f"img/{h.id}.png" for h in hits)
