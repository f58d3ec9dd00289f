"""One command retrains a bundle's stale components in dependency order, and only those."""
import json
import shutil

import pytest

from clipgpt_core import BundleError, load_bundle
from clipgpt_train import bundle as TB

TINY = {"steps": 2, "pairs": 3, "batch": 8, "warmup": 1, "save_every": 1, "threads": 1, "pretrain_steps": 1,
        "position_stage_steps": 1, "n_scenes": 64, "n_val": 16, "texts": 2, "text_vectors": 2,
        "edit_vectors": 2, "differences": 2, "residual_pairs": 64}


@pytest.fixture
def small_bundle(tmp_path):
    """The built-in bundle without its renderer (the renderer stage has its own tests)."""
    out = tmp_path / "bundle"
    shutil.copytree(load_bundle().path, out,
                    ignore=shutil.ignore_patterns("renderer", "classifier", "train_times.json"))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["components"].pop("renderer")
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_retrains_stale_stages_in_order_then_nothing(small_bundle, tmp_path, capsys):
    ckpts = str(tmp_path / "ckpt")
    done = TB.run(small_bundle, overrides=TINY, checkpoints=ckpts)
    assert list(done) == ["clip", "prior", "embedding_prior", "clip_gpt", "layout_head", "ranking_clip"]
    assert all(isinstance(v, float) for v in done.values())          # minutes: every stage ran
    bundle = load_bundle(small_bundle)                                # strict: consistent again
    assert bundle.clip_gpt is not None and bundle.captioner is bundle.clip_gpt.captioner     # CLIP-GPT captions
    assert bundle.captioner.ranking_clips == [bundle.ranking_clip]
    assert bundle.embedding_prior is not None and bundle.embedding_prior.residuals is not None
    times = json.loads((small_bundle / "train_times.json").read_text())
    assert set(times) == set(done) and all("machine" in t for t in times.values())
    record = json.loads((small_bundle / "clip_gpt" / "trained_against.json").read_text())
    assert record["clip"] == bundle.clip.fingerprint() and "recipe" in record
    # nothing is stale now
    assert set(TB.run(small_bundle, overrides=TINY, checkpoints=ckpts).values()) == {"up to date"}
    # a new recipe for the vector-writing stages (their cosine term) retrains those alone
    again = TB.run(small_bundle, overrides=TINY | {"cosine_weight": 0.5}, checkpoints=str(tmp_path / "c2"))
    assert again == {"clip": "up to date", "prior": "up to date", "embedding_prior": again["embedding_prior"], "clip_gpt": again["clip_gpt"],
                     "layout_head": "up to date", "ranking_clip": "up to date"}
    assert isinstance(again["embedding_prior"], float) and isinstance(again["clip_gpt"], float)
    # forcing a stage forces what can depend on it, not the ranking CLIP, which depends on nothing
    forced = TB.run(small_bundle, stages=["layout_head", "ranking_clip"], force=["layout_head"], overrides=TINY,
                    checkpoints=str(tmp_path / "c3"))
    assert isinstance(forced["layout_head"], float) and forced["ranking_clip"] == "up to date"


def test_a_new_clip_makes_the_bundle_refuse_until_retrained(small_bundle, tmp_path):
    TB.run(small_bundle, stages=["clip"], overrides=TINY, checkpoints=str(tmp_path / "ckpt"))
    with pytest.raises(BundleError, match="clipgpt_train.bundle"):
        load_bundle(small_bundle)
    done = TB.run(small_bundle, overrides=TINY, checkpoints=str(tmp_path / "ckpt"))
    assert done["clip"] == "up to date" and isinstance(done["clip_gpt"], float)
    load_bundle(small_bundle)


def test_a_bundle_with_only_its_clip_trains_the_rest_from_nothing(small_bundle, tmp_path):
    for name in ("prior", "embedding_prior", "clip_gpt", "layout_head"):
        shutil.rmtree(small_bundle / name)
    with pytest.raises(BundleError, match="incomplete"):
        load_bundle(small_bundle)
    done = TB.run(small_bundle, stages=["prior", "embedding_prior", "clip_gpt", "layout_head"], overrides=TINY,
                  checkpoints=str(tmp_path / "ckpt"))
    assert list(done) == ["prior", "embedding_prior", "clip_gpt", "layout_head"]
    assert all(isinstance(v, float) for v in done.values())
    assert load_bundle(small_bundle).clip_gpt is not None


def test_unknown_stage_is_an_error():
    with pytest.raises(SystemExit):
        TB.main(["--stages", "clip,captionr"])
