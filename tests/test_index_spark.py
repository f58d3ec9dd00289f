"""`clipgpt index --distribution-strategy pyspark`: a folder with broken files, embedded by clip-retrieval's
own inference with the built-in CLIP on Spark's local mode, into the layout `clip back` serves."""
import shutil

import numpy as np
import pandas as pd
import pytest

from clipgpt_core import world
from clipgpt_core.retrieval.local import LocalIndex, main

pytest.importorskip("pyspark")
N = 40


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """N world images (with their descriptions and scenes), in two subfolders, plus three broken files."""
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java 17")
    d = tmp_path_factory.mktemp("photos")
    truth = {}
    for i in range(N):
        ex = world.example(9000 + i, split="any")
        path = d / f"part{i % 2}" / f"{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        ex.image.save(path)
        truth[str(path)] = ex
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    (d / "empty.jpg").write_bytes(b"")
    (d / "part0" / "truncated.png").write_bytes((d / "part0" / "000.png").read_bytes()[:120])
    return d, truth


def test_pyspark_index_of_a_folder_with_broken_files(bundle, folder, tmp_path, monkeypatch, capsys):
    d, truth = folder
    monkeypatch.setattr("clipgpt_core.bundle.load_bundle", lambda *a, **k: bundle)
    out = tmp_path / "index-out"
    # two partitions of 24 images: two Spark tasks on local[2]
    main(["--folder", str(d), "--out", str(out), "--distribution-strategy", "pyspark", "--spark-workers", "2",
          "--write-batch-size", "24", "--batch-size", "16", "--num-prepro-workers", "0"])
    assert "index ready" in capsys.readouterr().out

    # clip-retrieval inference's layout, one row per readable image, and the index clip back serves
    parts = sorted((out / "embeddings" / "img_emb").glob("img_emb_*.npy"))
    assert len(parts) == 2
    emb = np.concatenate([np.load(p) for p in parts])
    meta = pd.concat([pd.read_parquet(p) for p in sorted((out / "embeddings" / "metadata").glob("*.parquet"))])
    assert emb.dtype == np.float16 and emb.shape == (N, bundle.clip.dim) and len(meta) == N
    assert sorted(meta["image_path"]) == sorted(truth)
    assert sorted(p.rsplit("/", 1)[-1] for p in (out / "skipped.txt").read_text().split()) == \
        ["corrupt.png", "empty.jpg", "truncated.png"]
    # the same embeddings as the bundle's own encoder (our CLIP, our preprocessing, eval mode)
    row = meta["image_path"].tolist().index(next(iter(truth)))
    ours = bundle.clip.encode_images([next(iter(truth))])[0]
    assert float(emb[row].astype(np.float32) @ ours) > 0.999

    index = LocalIndex(out / "index")
    assert len(index) == N and type(index.faiss_index).__name__ == "IndexFlatIP"     # small: flat
    # text -> image R@5: a caption finds its image (or an image the caption is just as true of) in the top 5
    found = 0
    for path, ex in truth.items():
        hits = index.search(bundle.clip.encode_texts([ex.caption])[0], k=5)
        found += any(h.image_path == path or world.is_true(ex.description, truth[h.image_path].scene) for h in hits)
    assert found / N >= 0.8, found / N

    # the embeddings folder alone (memory-mapped, exact search) answers as the index does
    raw = LocalIndex(out / "embeddings")
    q = bundle.clip.encode_texts([next(iter(truth.values())).caption])[0]
    assert len(raw) == N and raw.parts and isinstance(raw.parts[0], np.memmap)
    assert [h.image_path for h in raw.search(q, k=5)] == [h.image_path for h in index.search(q, k=5)]
