"""Batching across callers (clipgpt_core/batching.py): concurrent calls share model passes, each caller gets its own
results (seeded ones exactly as alone), a bad input fails only its caller, and long jobs give way to quick work."""
import threading
import time

import numpy as np
import pytest
import torch
from conftest import launched_app

from clipgpt_core.batching import Batcher, yield_to_quick
from clipgpt_core.errors import InputError


def together(fn, args: list) -> list:
    """fn(arg) for every arg, each in its own thread, started at once -> results (or exceptions) in order."""
    out = [None] * len(args)
    gate = threading.Barrier(len(args))

    def run(i):
        gate.wait()
        try:
            out[i] = fn(args[i])
        except Exception as e:  # the caller's own error is its result here
            out[i] = e
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_concurrent_calls_share_passes_and_each_gets_its_own_results():
    seen = []

    def square(items, key):
        seen.append(len(items))
        time.sleep(0.05)                           # a model pass: later callers queue up behind it
        if "bad" in items:
            raise ValueError("bad item")
        return [x * x for x in items]

    b = Batcher(square)
    out = together(lambda k: b([k, k + 1]), list(range(0, 24, 2)))
    assert out == [[k * k, (k + 1) ** 2] for k in range(0, 24, 2)]
    assert b.calls == 12 and b.batches < 12 and max(seen) > 2        # merged: fewer passes than callers
    out = together(lambda x: b([x]), [1, "bad", 3, 4])
    assert out[0] == [1] and out[2:] == [[9], [16]]
    assert isinstance(out[1], ValueError)                             # only the bad caller fails
    keyed = Batcher(lambda items, key: [(key, x) for x in items])
    assert together(lambda a: keyed([a[1]], key=a[0]), [("x", 1), ("y", 2)]) == [[("x", 1)], [("y", 2)]]
    nested = Batcher(lambda items, key: [nested([x], key=False)[0] if key else x for x in items])   # a call from its worker
    assert nested([5], key=True) == [5]


def test_a_long_job_waits_for_quick_work_between_its_steps():
    b = Batcher(lambda items, key: (time.sleep(0.3), items)[1])
    assert yield_to_quick() == 0.0                                    # nothing quick running: no wait
    t = threading.Thread(target=b, args=([1],))
    t.start()
    time.sleep(0.05)
    waited = yield_to_quick()
    t.join()
    assert 0.15 < waited < 1.0


def test_the_prior_and_clip_give_the_same_results_with_company(bundle):
    """Seeded samples are the samples alone; embeddings the embeddings alone; an empty text fails its caller."""
    prior, clip = bundle.prior, bundle.clip
    alone = [prior.sample(4, seed=s) for s in range(8)]
    assert together(lambda s: prior.sample(4, seed=s), list(range(8))) == alone
    greedy = prior.sample(2, temperature=0, prefix="a red")
    mixed = together(lambda a: prior.sample(2, seed=a, temperature=0 if a % 2 else 1.0,
                                            prefix="a red" if a % 2 else ""), list(range(6)))
    assert [mixed[i] for i in (1, 3, 5)] == [greedy] * 3 and mixed[0] == prior.sample(2, seed=0)
    captions = ["a red star", "two small green stars on a black background", "circle red a"] * 2
    scored = together(lambda t: prior.log_prob([t]), captions)
    assert np.allclose(np.concatenate(scored), prior.log_prob(captions), atol=1e-4)
    texts = ["a red star", "a blue circle on a black background", "two green squares", ""] * 2
    vectors = together(lambda t: clip.encode_texts([t]), texts)
    for t, v in zip(texts, vectors):
        if t:
            assert np.allclose(v, clip.encode_texts([t]), atol=1e-5)
        else:
            assert isinstance(v, InputError)
    images = [np.full((64, 64, 3), c, np.uint8) for c in (0, 128, 255, 60)]
    got = together(lambda im: clip.encode_images([im]), images)
    assert all(np.allclose(g, clip.encode_images([im]), atol=1e-5) for g, im in zip(got, images))


def test_captions_with_company_are_the_captions_alone(bundle):
    """Users' images share beam search passes; each gets the candidates it would alone (scores to float rounding)."""
    from clipgpt_core.world import render, sample_scene
    import random
    rng = random.Random(3)
    images = [render(sample_scene(rng), rng) for _ in range(6)]
    captioner = bundle.captioner
    alone = [captioner.candidates([im], num_beams=3)[0] for im in images]
    beams = captioner._batcher_beams
    calls, batches = beams.calls, beams.batches
    got = together(lambda im: captioner.candidates([im], num_beams=3)[0], images)
    assert beams.calls - calls == 6 and beams.batches - batches < 6                  # they met in the batcher
    for g, a in zip(got, alone):
        assert [r["caption"] for r in g] == [r["caption"] for r in a]
        assert np.allclose([r["score"] for r in g], [r["score"] for r in a], atol=1e-5)


def test_clip_text_cache_follows_the_weights(bundle):
    """Texts seen lately come from the cache, equal to a fresh encode; changing the weights in place empties it."""
    from clipgpt_core.models.clip import load_clip
    clip = load_clip(bundle.path / bundle.manifest["components"]["clip"]["path"])
    texts = ["a red star", "two green squares", "a red star"]
    first = clip.encode_texts(texts)
    assert np.array_equal(first[0], first[2]) and len(clip.text_cache._vectors) == 2
    assert np.array_equal(clip.encode_texts(texts[:1])[0], first[0])                 # served from the cache
    import copy
    assert len(copy.deepcopy(clip.text_cache)._vectors) == 0                         # a copy starts empty
    with torch.no_grad():
        clip.model.token_embedding.weight.mul_(1.5)                                  # a training step, in place
    changed = clip.encode_texts(texts[:1])
    assert not np.allclose(changed[0], first[0], atol=1e-4)
    assert np.allclose(changed, clip._encode_texts(texts[:1]), atol=1e-6)           # the new weights' embedding


@pytest.fixture(scope="module")
def client(bundle):
    from clipgpt_app.main import QUEUE
    with launched_app(bundle, queue=QUEUE) as c:
        yield c


def test_users_at_once_get_what_each_would_alone(client, bundle):
    """Through the app as users call it: seeded /sample answers with company equal the answers alone."""
    from gradio_client import Client
    alone = [client.predict(n=4, seed=s, api_name="/sample") for s in range(6)]
    clients = [Client(client.src, verbose=False) for _ in range(6)]
    sampler = bundle.prior._batcher_sample
    calls, batches = sampler.calls, sampler.batches
    got = together(lambda s: clients[s].predict(n=4, seed=s, api_name="/sample"), list(range(6)))
    assert sampler.calls - calls == 6 and sampler.batches - batches < 6       # they met in the prior's batcher
    assert [g["data"] if isinstance(g, dict) else g for g in got] == \
        [a["data"] if isinstance(a, dict) else a for a in alone]


def test_gallery_images_are_files_written_once():
    """Galleries get content-named files written atomically and never rewritten: a download of one user's gallery
    cannot meet another user's rewrite of the same file (the dropped connections under load)."""
    import os

    from PIL import Image

    from clipgpt_app.tabs import GALLERY_DIR, gallery_file, upscale
    im = Image.new("RGB", (64, 64), (200, 30, 30))
    first = gallery_file(im)
    stamp = os.stat(first).st_mtime_ns
    time.sleep(0.01)
    assert gallery_file(im.copy()) == first and os.stat(first).st_mtime_ns == stamp      # not written again
    assert gallery_file(Image.new("RGB", (64, 64), (0, 0, 200))) != first
    big = upscale(im, 160)
    assert big.startswith(str(GALLERY_DIR)) and Image.open(big).size == (128, 128)
    assert not list(GALLERY_DIR.glob("*.tmp"))
