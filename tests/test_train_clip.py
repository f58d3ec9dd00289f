"""A few training steps of a tiny CLIP lower the contrastive loss on a held-out batch."""
import json
import random

import open_clip
import torch
from safetensors.torch import load_file

from clipgpt_train import clip as T
from clipgpt_train import clip_facts as CF
from clipgpt_core import world
from clipgpt_core.world.captions import parse_caption
from clipgpt_core.models.clip import load_clip

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def held_out_loss(clip, seed=99):
    cfg = T.TrainConfig(pairs=16)
    images, caps, negs, truth, valid, _, _, _ = T.make_batch(random.Random(seed), cfg)
    pp = clip.model.visual.preprocess_cfg
    with torch.no_grad():
        img = clip.model.encode_image(T.images_to_tensor(images, pp["mean"], pp["std"]))
        return T.clip_loss(clip, img, clip.tokenizer(caps), clip.tokenizer(negs),
                           torch.from_numpy(truth), torch.tensor(valid)).item()


def weights(path):
    return load_file(path / "open_clip_model.safetensors")


def test_truth_matrix_marks_every_true_pair():
    cfg = T.TrainConfig(pairs=12)
    _, caps, negs, truth, valid, facts, scenes, stated = T.make_batch(random.Random(0), cfg)
    assert truth.diagonal().all() and len(negs) == len(caps)
    assert all(n != c for n, c, v in zip(negs, caps, valid) if v)
    assert facts.shape == stated.shape == (len(caps), len(CF.FACTS)) and len(scenes) == len(caps)
    assert (stated <= facts).all()     # a caption states only what is true of its scene
    # every caption is true of its own scene
    assert all(truth[i, i] for i in range(len(caps)))


def test_no_training_text_names_a_held_out_pair():
    """Held-out colour-shape pairs stay out of training text too, negatives included."""
    from clipgpt_core.world.captions import parse_caption
    cfg = T.TrainConfig(pairs=48)
    for seed in range(3):
        _, caps, negs, *_ = T.make_batch(random.Random(seed), cfg)
        for text in caps + negs:
            d = parse_caption(text)
            assert d is not None and T.states_only_train_pairs(d), text


def test_scene_facts_are_the_ground_truth():
    scene = world.Scene("black", (world.Obj("red", "star", "large", 10, 10, 24, 0),
                                  world.Obj("blue", "cross", "small", 50, 50, 12, 0)))
    on = {f for f, v in zip(CF.FACTS, CF.scene_facts(scene)) if v}
    assert on == {"shape:star", "shape:cross", "colour:red", "colour:blue", "size:large", "size:small",
                  "position:top left", "position:bottom right", "background:black", "count:2",
                  "pair:blue cross"}     # red star is a held-out pair: no training fact names it


def test_binding_texts_swap_two_colours():
    scene = world.Scene("black", (world.Obj("red", "square", "large", 10, 10, 24, 0),
                                  world.Obj("blue", "cross", "small", 50, 50, 12, 0)))
    true, swapped = CF.binding_texts(scene, random.Random(0))
    assert sorted(true.split(" and ")) == ["a blue cross", "a red square"]
    assert sorted(swapped.split(" and ")) == ["a blue square", "a red cross"]
    same = world.Scene("black", scene.objects[:1] * 2)
    assert CF.binding_texts(same, random.Random(0)) is None


def test_binding_texts_swap_two_sizes():
    scene = world.Scene("black", (world.Obj("red", "square", "large", 10, 10, 24, 0),
                                  world.Obj("orange", "cross", "small", 50, 50, 12, 0)))
    true, swapped = CF.binding_texts(scene, random.Random(0), "size")
    assert sorted(true.split(" and ")) == ["a large red square", "a small orange cross"]
    assert sorted(swapped.split(" and ")) == ["a large orange cross", "a small red square"]
    assert not world.is_true(parse_caption(swapped), scene) and world.is_true(parse_caption(true), scene)
    both_large = world.Scene("black", (scene.objects[0], world.Obj("orange", "cross", "large", 50, 50, 24, 0)))
    assert CF.binding_texts(both_large, random.Random(0), "size") is None


def tiny_config(tmp_path, name, **kw):
    (tmp_path / "tiny-test-clip.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(tmp_path / "tiny-test-clip.json")
    kw = {"pretrain_steps": 1, "position_stage_steps": 0} | kw
    return T.TrainConfig(out=str(tmp_path / name), checkpoint=str(tmp_path / f"{name}-ckpt"),
                         model_name="tiny-test-clip", text_from="", freeze_text=False, **kw)


def test_few_steps_lower_the_loss(tmp_path):
    cfg = tiny_config(tmp_path, "clip", steps=40, pairs=16, warmup=5, lr=3e-3, save_every=1000, threads=2)
    before = held_out_loss(T.build_model(cfg))
    clip = T.train(cfg)
    after = held_out_loss(clip)
    assert after < before - 0.1, (before, after)
    # the saved component reloads to the same model
    reloaded = load_clip(tmp_path / "clip")
    assert abs(held_out_loss(reloaded) - after) < 1e-4
    record = json.loads((tmp_path / "clip" / "train_config.json").read_text())
    assert record["completed_steps"] == 40 and record["fingerprint"] == clip.fingerprint()


def test_interrupted_run_resumes_bit_for_bit(tmp_path):
    """Stopped mid-run (in either stage) then run again with the same command: the weights equal
    those of one uninterrupted run."""
    common = dict(steps=5, pairs=3, warmup=1, save_every=2, threads=1, position_stage_steps=3)
    T.train(tiny_config(tmp_path, "whole", **common))
    T.train(tiny_config(tmp_path, "split", stop_after=3, **common))     # checkpoint at 2 and at 3
    stopped = weights(tmp_path / "split")
    T.train(tiny_config(tmp_path, "split", stop_after=7, **common))     # into the position stage
    T.train(tiny_config(tmp_path, "split", **common))                   # the same command again
    whole = weights(tmp_path / "whole")
    split = weights(tmp_path / "split")
    assert all(torch.equal(whole[k], split[k]) for k in whole)
    assert not all(torch.equal(whole[k], stopped[k]) for k in whole)


def test_frozen_text_tower_is_kept(tmp_path):
    """v2 trains the image side against a frozen copy of another CLIP's text tower: the text
    fingerprint (what the prior and renderer depend on) does not move, the image side does."""
    source = tiny_config(tmp_path, "source", steps=1, pairs=3, warmup=1, threads=1)
    first = T.train(source)
    cfg = tiny_config(tmp_path, "v2", steps=3, pairs=3, warmup=1, threads=1)
    cfg.text_from, cfg.freeze_text = str(tmp_path / "source"), True
    second = T.train(cfg)
    assert second.fingerprint("text") == first.fingerprint("text")
    assert second.fingerprint() != first.fingerprint()


def test_checkpoint_of_another_run_is_refused(tmp_path):
    import pytest
    T.train(tiny_config(tmp_path, "a", steps=2, pairs=3, warmup=1, threads=1))
    other = tiny_config(tmp_path, "a", steps=2, pairs=3, warmup=1, threads=1, lr=1e-2)
    with pytest.raises(ValueError, match="another run"):
        T.train(other)


def test_the_position_stage_runs_the_same_on_a_saved_first_stage(tmp_path):
    """from_clip: the saved first stage, then the position stage alone, ends with the weights of one whole run."""
    common = dict(steps=3, pairs=3, warmup=1, threads=1)
    T.train(tiny_config(tmp_path, "whole", position_stage_steps=2, **common))
    T.train(tiny_config(tmp_path, "first", **common))
    T.train(tiny_config(tmp_path, "second", position_stage_steps=2, from_clip=str(tmp_path / "first"), **common))
    whole = weights(tmp_path / "whole")
    second = weights(tmp_path / "second")
    first = weights(tmp_path / "first")
    assert all(torch.equal(whole[k], second[k]) for k in whole)
    assert not all(torch.equal(whole[k], first[k]) for k in whole)


def test_the_position_stage_moves_only_the_pooling(tmp_path):
    """On the shipped architecture: the text tower (what the prior and renderer read) and the convolutions with
    their batch statistics stay as the first stage left them; the attention pool learns."""
    from clipgpt_core.models.clip import create_clip
    create_clip("shapes-clip-v2").save(tmp_path / "first")
    cfg = T.TrainConfig(out=str(tmp_path / "second"), checkpoint=str(tmp_path / "ckpt"), from_clip=str(tmp_path / "first"),
                        position_stage_steps=2, pairs=3, warmup=1, threads=1)
    clip = T.train(cfg)
    before, after = load_clip(tmp_path / "first"), weights(tmp_path / "second")
    assert clip.fingerprint("text") == before.fingerprint("text")
    old = before.model.state_dict()
    conv = [k for k in old if k.startswith("visual.trunk.features.")]
    pool = [k for k in old if k.startswith("visual.trunk.pool.")]
    assert any("running_mean" in k for k in conv) and all(torch.equal(old[k], after[k]) for k in conv)
    assert not all(torch.equal(old[k], after[k]) for k in pool)
    assert json.loads((tmp_path / "second" / "train_config.json").read_text())["completed_steps"] == 2


def test_the_anchor_holds_the_image_embedding_near_the_first_stage(tmp_path):
    """position_stage_anchor: the same position stage with and without it; with it, the embedding of new
    images moves less from the first stage's (what the captioner and retrieval were built on)."""
    from clipgpt_core.models.clip import create_clip
    create_clip("shapes-clip-v2").save(tmp_path / "first")
    images = [world.render(world.sample_scene(random.Random(i))) for i in range(16)]
    first, moved = load_clip(tmp_path / "first").encode_images(images), {}
    for anchor in (0.0, 100.0):
        cfg = T.TrainConfig(out=str(tmp_path / f"a{anchor:g}"), checkpoint=str(tmp_path / f"c{anchor:g}"),
                            from_clip=str(tmp_path / "first"), position_stage_steps=4, position_stage_lr=1e-2,
                            position_stage_anchor=anchor, pairs=3, warmup=1, threads=1)
        moved[anchor] = 1 - (T.train(cfg).encode_images(images) * first).sum(-1).mean().item()
    assert 0 <= moved[100.0] < moved[0.0]


def test_size_conjunctions_are_the_recipe_and_the_older_recipe_still_trains(tmp_path):
    from clipgpt_train.loop import run_key
    key = run_key(T.TrainConfig())
    assert key["size_conjunctions"] is True and key["size_swap_share"] == 0.3
    cfg = tiny_config(tmp_path, "unsized", steps=3, pairs=8, warmup=1, save_every=1000, threads=2,
                      size_conjunctions=False, size_swap_share=0.0)
    clip = T.train(cfg)
    assert load_clip(tmp_path / "unsized").fingerprint() == clip.fingerprint()


def test_every_recipe_field_is_a_flag_tuples_as_commas():
    """config_from_args: the recipe's tuples (the object mix) are flags too, each value of the default's type."""
    from clipgpt_train.loop import config_from_args
    from clipgpt_train.renderer import RendererTrainConfig
    assert config_from_args(T.TrainConfig, "", []) == T.TrainConfig()
    assert config_from_args(T.TrainConfig, "", ["--object-mix", "0.15,0.2,0.3,0.35"]).object_mix == (0.15, 0.2, 0.3, 0.35)
    assert config_from_args(RendererTrainConfig, "", ["--vae-channels", "8,16"]).vae_channels == (8, 16)


def test_the_ranking_clip_is_the_recipe_on_crowded_scenes_saved_in_float16(tmp_path):
    from clipgpt_train import ranking_clip as R
    tiny_config(tmp_path, "x")                                          # registers the tiny architecture
    cfg = R.RankingClipConfig(out=str(tmp_path / "rc"), checkpoint=str(tmp_path / "rc-ckpt"),
                              model_name="tiny-test-clip", steps=3, pretrain_steps=1, position_stage_steps=1,
                              pairs=3, warmup=1, threads=1)
    assert cfg.object_mix[3] > T.TrainConfig().object_mix[3]      # more four-object scenes than the bundle CLIP's
    clip = R.train(cfg)
    stored = load_file(tmp_path / "rc" / "open_clip_model.safetensors")
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    reloaded = load_clip(tmp_path / "rc")
    assert next(reloaded.model.parameters()).dtype == torch.float32
    record = json.loads((tmp_path / "rc" / "train_config.json").read_text())
    assert record["fingerprint"] == clip.fingerprint() == reloaded.fingerprint()
    texts = ["a red star", "two blue circles"]
    assert torch.allclose(torch.from_numpy(clip.encode_texts(texts)), torch.from_numpy(reloaded.encode_texts(texts)),
                          atol=1e-6)
