"""Nearest images with the built-in (trained) bundle: the right image comes first."""
import json

import numpy as np
import pytest
from PIL import Image

from clipgpt_core import world
from clipgpt_core.retrieval.local import GalleryError, combine
from clipgpt_core.retrieval.nearest import NearestImages


@pytest.fixture(scope="module")
def finder(bundle):
    return NearestImages(bundle, progress=False)


def gallery_scenes(finder):
    idx = finder.builtin_index()
    return idx, json.loads((idx.dir.parent / "scenes.json").read_text())


def full_description(obj, background):
    return f"a {obj['size']} {obj['colour']} {obj['shape']} in the {obj['position']} on a {background} background"


def test_gallery_is_a_clip_retrieval_index(finder):
    idx, scenes = gallery_scenes(finder)
    assert len(idx) == len(scenes) == 400
    for name in ("image.index", "text.index", "metadata"):
        assert (idx.dir / name).exists()
    emb = np.load(idx.dir.parent / "embeddings" / "img_emb" / "img_emb_0.npy")
    assert emb.dtype == np.float16 and emb.shape == (400, finder.clip.dim)


def test_unambiguous_text_queries_rank_the_right_image_first(finder):
    idx, scenes = gallery_scenes(finder)
    singles = [(i, s) for i, s in enumerate(scenes) if len(s["objects"]) == 1]
    descriptions = [full_description(s["objects"][0], s["background"]) for _, s in singles]
    unique = [(i, d) for (i, _), d in zip(singles, descriptions) if descriptions.count(d) == 1]
    assert len(unique) > 50
    # unambiguous = no other gallery image (of any object count) has that object and background
    firsts = [finder.search(text=d, k=1)[0].id == i for i, d in unique]
    assert np.mean(firsts) >= 0.8, np.mean(firsts)


def test_nearest_image_matches_the_query(finder):
    """For full single-object descriptions, the nearest image holds an object of the queried colour
    and size, on the queried background."""
    idx, scenes = gallery_scenes(finder)
    ok = []
    for i, s in [(i, s) for i, s in enumerate(scenes) if len(s["objects"]) == 1][:60]:
        o = s["objects"][0]
        top = scenes[finder.search(text=full_description(o, s["background"]), k=1)[0].id]
        ok.append(top["background"] == s["background"] and
                  any(t["colour"] == o["colour"] and t["size"] == o["size"] for t in top["objects"]))
    assert np.mean(ok) >= 0.9, np.mean(ok)


def test_image_query_finds_itself(finder):
    idx, _ = gallery_scenes(finder)
    for i in (0, 17, 123):
        path = idx.metadata.column("image_path")[i].as_py()
        hit = finder.search(image=Image.open(path), k=1)[0]
        assert hit.id == i and hit.similarity > 0.99


def test_text_and_image_combined(finder):
    t = finder.query_embedding(text="a red circle")
    i = finder.query_embedding(image=world.example(3).image)
    both = finder.query_embedding("a red circle", world.example(3).image, text_weight=0.5)
    assert np.allclose(both, combine(t, i, 0.5), atol=1e-5)
    assert np.allclose(finder.query_embedding("a red circle", world.example(3).image, text_weight=1.0), t, atol=1e-5)


def test_empty_query_is_refused(finder):
    with pytest.raises(ValueError, match="text query"):
        finder.search(text="  ", image=None)


def test_folder_index_skips_bad_files(finder, tmp_path):
    for s in range(6):
        world.example(s).image.save(tmp_path / f"img{s}.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "notes.txt").write_text("ignore me")
    idx = finder.index_folder(str(tmp_path))
    assert len(idx) == 6
    hit = finder.search(image=world.example(4).image, k=1, folder=str(tmp_path))[0]
    assert hit.image_path.endswith("img4.png")
    with pytest.raises(GalleryError, match="Not a folder"):
        finder.index_folder(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(GalleryError, match="No images"):
        finder.index_folder(str(tmp_path / "empty"))


def test_zero_shot_reads_single_objects(finder):
    """Colour and background (what the shipped model reads reliably; see the benchmark for the rest)."""
    right = 0
    for s in range(20):
        ex = world.example(10_000 + s, n_objects=1)
        p = finder.zero_shot(ex.image)
        assert set(p) == {"colour", "shape", "size", "position", "background"}
        for probs in p.values():
            assert abs(sum(probs.values()) - 1) < 1e-4
        top = {a: max(v, key=v.get) for a, v in p.items()}
        right += top["colour"] == ex.scene.objects[0].colour and top["background"] == ex.scene.background
    assert right >= 18


def test_a_first_start_builds_the_gallery_in_the_background(bundle, tmp_path, monkeypatch):
    """prepare_builtin_index returns at once (the app answers meanwhile); the first search waits for the build,
    which runs in a child process and lands in the cache, where the next start finds it."""
    import copy
    import time

    from clipgpt_core.retrieval import local as index
    monkeypatch.setattr(index, "DEFAULT_CACHE", tmp_path)
    small = copy.copy(bundle)
    small.gallery = {"kind": "shapesworld", "size": 16, "seed": 0}
    finder = NearestImages(small, progress=False)
    t0 = time.perf_counter()
    building = finder.prepare_builtin_index()
    assert time.perf_counter() - t0 < 2 and not building.done() and not finder.builtin_ready()
    assert finder.prepare_builtin_index() is building                # one build, however often asked
    assert len(finder.search("a red circle", k=3)) == 3 and finder.builtin_ready()
    assert (index.world_gallery_dir(small)[0] / "index" / "image.index").exists()
