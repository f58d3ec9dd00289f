"""A few training steps of a tiny CLIP lower the contrastive loss on a held-out batch."""
import json
import random

import open_clip
import torch

from clipgpt_core import train_clip as T
from clipgpt_core import world
from clipgpt_core.clip_model import load_clip

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def held_out_loss(clip, seed=99):
    cfg = T.TrainConfig(pairs=16)
    images, caps, negs, truth, valid, _ = T.make_batch(random.Random(seed), cfg)
    pp = clip.model.visual.preprocess_cfg
    with torch.no_grad():
        img = clip.model.encode_image(T.images_to_tensor(images, pp["mean"], pp["std"]))
        return T.clip_loss(clip, img, clip.tokenizer(caps), clip.tokenizer(negs),
                           torch.from_numpy(truth), torch.tensor(valid)).item()


def test_truth_matrix_marks_every_true_pair():
    cfg = T.TrainConfig(pairs=12)
    _, caps, negs, truth, valid, facts = T.make_batch(random.Random(0), cfg)
    assert truth.diagonal().all() and len(negs) == len(caps)
    assert all(n != c for n, c, v in zip(negs, caps, valid) if v)
    assert facts.shape == (len(caps), len(T.FACTS))


def test_scene_facts_are_the_ground_truth():
    scene = world.Scene("black", (world.Obj("red", "star", "large", 10, 10, 24, 0),
                                  world.Obj("blue", "cross", "small", 50, 50, 12, 0)))
    on = {f for f, v in zip(T.FACTS, T.scene_facts(scene)) if v}
    assert on == {"shape:star", "shape:cross", "colour:red", "colour:blue", "size:large", "size:small",
                  "position:top left", "position:bottom right", "background:black", "count:2"}


def test_few_steps_lower_the_loss(tmp_path):
    (tmp_path / "tiny-test-clip.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(tmp_path / "tiny-test-clip.json")
    torch.manual_seed(0)
    before = held_out_loss(T.create_clip("tiny-test-clip"))
    cfg = T.TrainConfig(out=str(tmp_path / "clip"), model_name="tiny-test-clip", steps=40, restart_steps=0, binding_steps=0,
                        pairs=16, warmup=5, lr=3e-3, save_every=1000, threads=2)
    clip = T.train(cfg)
    after = held_out_loss(clip)
    assert after < before - 0.1, (before, after)
    # the saved component reloads to the same model
    reloaded = load_clip(tmp_path / "clip")
    assert abs(held_out_loss(reloaded) - after) < 1e-4
    assert json.loads((tmp_path / "clip" / "train_config.json").read_text())["completed_steps"] == 40


def test_restart_stage_on_its_own_equals_one_run(tmp_path):
    """--resume DIR --start-stage 2 after a finished stage 1 gives the weights of one whole run."""
    from safetensors.torch import load_file
    common = dict(steps=2, restart_steps=2, binding_steps=2, pairs=3, warmup=1, save_every=1000, threads=1)
    T.train(T.TrainConfig(out=str(tmp_path / "whole"), **common))
    T.train(T.TrainConfig(out=str(tmp_path / "stage1"), stop_after=2, **common))
    T.train(T.TrainConfig(out=str(tmp_path / "stage2"), resume=str(tmp_path / "stage1"), start_stage=2, **common))
    whole = load_file(tmp_path / "whole" / "open_clip_model.safetensors")
    split = load_file(tmp_path / "stage2" / "open_clip_model.safetensors")
    stage1 = load_file(tmp_path / "stage1" / "open_clip_model.safetensors")
    assert all(torch.equal(whole[k], split[k]) for k in whole)
    assert not all(torch.equal(whole[k], stage1[k]) for k in whole)
