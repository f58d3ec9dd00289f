"""CLIP -> GPT captioning and the caption -> image-embedding prior."""
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from clipgpt_core import load_bundle, save_bundle, world
from clipgpt_core.bundle import Bundle
from clipgpt_core.models.captioner import (DECODER_FILE, MODE_FALLBACK, MODE_MAPPER, Captioner, MapperConfig,
                                           PrefixMapper, beam_search, decoder_from_prior)
from clipgpt_core.world.captions import WORD_GROUPS
from clipgpt_core.world.captions import parse_caption
from clipgpt_core.models.embedding_prior import EmbeddingPrior, EmbeddingPriorConfig, EmbeddingPriorNet
from clipgpt_core.models.caption_prior import generate
from clipgpt_train.captioner import CaptionerTrainConfig
from clipgpt_train.captioner import train as train_captioner
from clipgpt_train.embedding_prior import EmbeddingPriorTrainConfig
from clipgpt_train.embedding_prior import train as train_embedding_prior
from clipgpt_core.world.corpus import world_pairs


def test_one_beam_is_greedy(bundle):
    prior = bundle.prior
    prefix = torch.randn(3, 4, prior.cfg.width) * 0.1
    beams = beam_search(prior, prefix, num_beams=1)
    start = torch.full((3, 1), prior.cfg.sot_token)
    greedy = generate(prior.gpt, start, prefix, temperature=0)
    assert [b[0][0] for b in beams] == greedy


def test_beams_are_sorted_and_distinct(bundle):
    prefix = torch.randn(2, 4, bundle.prior.cfg.width) * 0.1
    for beams in beam_search(bundle.prior, prefix, num_beams=4):
        scores = [s for _, s in beams]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(ids) for ids, _ in beams}) == 4


def test_captioner_and_embedding_prior_round_trip(bundle, tmp_path):
    clip, prior = bundle.clip, bundle.prior
    mapper = PrefixMapper(MapperConfig(clip.dim, prior.cfg.width, 3, 64)).eval()
    ep = EmbeddingPrior(clip, EmbeddingPriorNet(EmbeddingPriorConfig(clip.dim, 64, 1)).eval())
    b = Bundle("tiny", clip, prior=prior, captioner=Captioner(clip, prior, mapper), embedding_prior=ep)
    loaded = load_bundle(save_bundle(b, tmp_path / "tiny"))
    images = [world.example(s, n_objects=1).image for s in range(3)]
    assert loaded.captioner.mode == MODE_MAPPER
    assert loaded.captioner.caption(images) == b.captioner.caption(images)
    texts = ["a red circle", "two blue stars"]
    p = loaded.embedding_prior.predict(texts)
    assert p.shape == (2, clip.dim) and p.dtype == np.float32
    assert np.allclose(np.linalg.norm(p, axis=1), 1, atol=1e-5)
    assert np.allclose(p, ep.predict(texts), atol=1e-6)


def test_fallback_captioner_without_a_mapper(bundle):
    cap = Captioner(bundle.clip, bundle.prior, None, pool_size=64)
    assert cap.mode == MODE_FALLBACK
    ranked = cap.candidates([world.example(3, n_objects=1).image], num_beams=5)[0]
    assert len(ranked) == 5
    scores = [r["score"] for r in ranked]
    assert scores == sorted(scores, reverse=True)


def _mapper_loss(bundle, mapper, decoder=None, seed=7):
    images, captions, _, _ = world_pairs(random.Random(seed), 48)
    emb = torch.from_numpy(bundle.clip.encode_images(images))
    tokens = bundle.prior.token_batch(captions)
    with torch.no_grad():
        return (decoder or bundle.prior).gpt(tokens, mapper(emb), loss=True).item()


def test_captioner_training_lowers_the_loss(bundle, tmp_path):
    cfg = CaptionerTrainConfig(out=str(tmp_path / "captioner"), steps=20, batch=24, warmup=2, lr=3e-3,
                               checkpoint=str(tmp_path / "ckpt"))
    before = _mapper_loss(bundle, PrefixMapper(MapperConfig(bundle.clip.dim, bundle.prior.cfg.width,
                                                            cfg.prefix_length, cfg.hidden)).eval())
    trained = train_captioner(cfg)
    after = _mapper_loss(bundle, trained.mapper, trained.decoder)
    assert after < before - 0.03, (before, after)        # 20 steps on a held-out batch: 1.357 -> 1.305
    assert (tmp_path / "captioner" / "mapper.safetensors").exists()
    # the prior itself is untouched; the decoder shares its token embedding
    for a, b in zip(trained.prior.gpt.parameters(), bundle.prior.gpt.parameters()):
        assert torch.equal(a, b)
    assert trained.decoder.gpt.token_embedding is trained.prior.gpt.token_embedding


def test_tuned_decoder_round_trips_without_the_embedding(bundle, tmp_path):
    clip, prior = bundle.clip, bundle.prior
    decoder = decoder_from_prior(prior)
    with torch.no_grad():
        for p in decoder.gpt.transformer.parameters():
            p.add_(0.05 * torch.randn_like(p))
    mapper = PrefixMapper(MapperConfig(clip.dim, prior.cfg.width, 3, 64)).eval()
    b = Bundle("tuned", clip, prior=prior, captioner=Captioner(clip, prior, mapper, decoder=decoder))
    path = save_bundle(b, tmp_path / "tuned")
    assert (path / "captioner" / DECODER_FILE).stat().st_size < 4e6        # blocks only, not 49408 x 128
    loaded = load_bundle(path).captioner
    assert loaded.decoder is not loaded.prior
    assert loaded.decoder.gpt.token_embedding is loaded.prior.gpt.token_embedding
    images = [world.example(s, n_objects=1).image for s in range(3)]
    assert loaded.caption(images, rerank=False) == b.captioner.caption(images, rerank=False)
    assert loaded.caption(images, rerank=False) != Captioner(clip, prior, mapper).caption(images, rerank=False)


def test_one_word_edits_stay_grammatical():
    cap = Captioner(None, None, None, edit_groups=WORD_GROUPS)
    edits = cap.one_word_edits("a red star, and two small crosses")
    assert "an orange star, and two small crosses" in edits          # article follows the new word
    assert "a red circle, and two small crosses" in edits
    assert "a red star, and two small squares" in edits              # plurals swap with plurals
    assert "a red star, and two large crosses" in edits
    assert not any("a orange" in e or "an red" in e for e in edits)
    assert len(edits) == 7 + 5 + 5 + 1
    assert Captioner(None, None, None).one_word_edits("a red star") == []
    # a background takes no colour's edit: "an orange background" is not the world's
    on_white = cap.one_word_edits("a red star on a white background")
    assert "a red star on a black background" not in on_white and not any("orange background" in e for e in on_white)
    assert "a black star on a white background" in on_white


def test_a_listing_loses_one_object_each_way():
    """world.captions.dropped_phrases, CLIP-GPT's structural edits: the object a blurred vector reads twice."""
    from clipgpt_core.world.captions import dropped_phrases
    assert dropped_phrases("a red star, a blue circle and a red star on a gray background") == [
        "a blue circle and a red star on a gray background", "a red star and a red star on a gray background",
        "a red star and a blue circle on a gray background"]
    assert dropped_phrases("a red star in the top left and a small blue circle") == [
        "a small blue circle", "a red star in the top left"]
    for one_object in ("a red star", "two red stars", "a red star left of a blue circle", "not a caption"):
        assert dropped_phrases(one_object) == []


def test_edits_let_ranking_reach_a_pair_the_decoder_never_wrote(bundle):
    """A held-out colour-shape pair: the candidates include the one-word edits of the beams."""
    ex = world.example(4, n_objects=1, split="heldout")
    plain = Captioner(bundle.clip, bundle.prior, bundle.captioner.mapper, decoder=bundle.captioner.decoder)
    beams = {r["caption"] for r in plain.candidates([ex.image], num_beams=5)[0]}
    edited = {r["caption"] for r in bundle.captioner.candidates([ex.image], num_beams=5)[0]}
    assert beams < edited and len(edited) > len(beams) + 5


def test_the_best_few_candidates_are_the_first_of_all_without_scoring_every_edit(bundle):
    """top=k gives the first k of all candidates (captions and scores), scoring only the edits that could be
    among them; caption() (top=1) picks what ranking every candidate picks."""
    cap = bundle.captioner
    images = [world.example(i, n_objects=n).image for i, n in ((5, 1), (6, 2), (7, 3))]
    scored = []
    real = cap._log_prob

    def counting(prefix, texts, *args):
        scored.append(len(texts))
        return real(prefix, texts, *args)
    cap._log_prob = counting
    try:
        for im in images:
            scored.clear()
            full = cap.candidates([im], num_beams=5)[0]
            every = sum(scored)
            for k in (1, 5):
                scored.clear()
                best = cap.candidates([im], num_beams=5, top=k)[0]
                assert [r["caption"] for r in best] == [r["caption"] for r in full[:k]]
                assert np.allclose([r["score"] for r in best], [r["score"] for r in full[:k]], atol=1e-5)
                assert sum(scored) < every
    finally:
        del cap._log_prob
    assert cap.caption(images) == [cap.candidates([im], num_beams=5)[0][0]["caption"] for im in images]
    with pytest.raises(ValueError, match="top"):
        cap.candidates(images[:1], top=0)


def test_the_ranking_clip_joins_the_ranking_of_images_not_of_vectors(bundle):
    """An image's candidates are ranked by the mean of the bundle CLIP's and the ranking CLIP's similarities (plus
    the prior term); a CLIP vector, which only the bundle's CLIP can read, by the bundle CLIP's alone."""
    cap, rc = bundle.captioner, bundle.ranking_clip
    assert rc is not None and cap.ranking_clips == [rc]
    im = world.example(8, n_objects=3).image
    rows = cap.candidates([im], num_beams=3)[0]
    texts = [r["caption"] for r in rows]
    ours, theirs = (c.encode_texts(texts) @ c.encode_images([im])[0] for c in (bundle.clip, rc))
    assert np.allclose([r["clip_similarity"] for r in rows], (ours + theirs) / 2, atol=1e-5)
    assert np.allclose([r["score"] for r in rows],
                       [r["clip_similarity"] + cap.prior_weight * r["log_prob"] for r in rows], atol=1e-5)
    assert not np.allclose(ours, theirs, atol=1e-2)              # two CLIPs, not one twice
    vec = cap.candidates_from_embeddings(bundle.clip.encode_images([im]), num_beams=3)[0]
    alone = bundle.clip.encode_texts([r["caption"] for r in vec]) @ bundle.clip.encode_images([im])[0]
    assert np.allclose([r["clip_similarity"] for r in vec], alone, atol=1e-5)


def test_embedding_prior_training_moves_text_towards_images(bundle, tmp_path):
    images, captions, _, _ = world_pairs(random.Random(11), 64)
    img = bundle.clip.encode_images(images)
    raw = (bundle.clip.encode_texts(captions) * img).sum(1).mean()
    ep = train_embedding_prior(EmbeddingPriorTrainConfig(out=str(tmp_path / "ep"), steps=40, batch=48, warmup=2,
                                                             checkpoint=str(tmp_path / "ckpt"), residual_pairs=256))
    via = (ep.predict(captions) * img).sum(1).mean()
    assert via > raw + 0.02, (raw, via)   # the trained CLIP's text is already close (~0.8): closer still
    loaded = EmbeddingPrior.load(bundle.clip, tmp_path / "ep")                     # the residuals saved beside it
    assert np.allclose(loaded.sample(captions[:2], 3, seed=4), ep.sample(captions[:2], 3, seed=4), atol=1e-6)


def test_sampling_prior_varies_what_the_caption_leaves_open(bundle):
    """EmbeddingPrior.sample (the shipped residual Gaussian): seeded, unit vectors around the mean, and read by the
    layout head as scenes that keep the caption's objects while their places vary."""
    from clipgpt_core.errors import BundleError, InputError
    from clipgpt_core.models.decoder import REFINE_ROUNDS
    from clipgpt_core.models.layout_head import LayoutHead
    ep = bundle.embedding_prior
    text = "a red circle and a blue square"
    z = ep.sample([text], 16, seed=3)
    assert z.shape == (1, 16, bundle.clip.dim) and np.allclose(np.linalg.norm(z, axis=-1), 1, atol=1e-5)
    assert np.array_equal(z, ep.sample([text], 16, seed=3)) and not np.array_equal(z, ep.sample([text], 16, seed=4))
    mean = ep.predict([text])[0]
    assert np.allclose(ep.sample([text], 2, temperature=0)[0], mean, atol=1e-6)
    cos = z[0] @ mean
    assert 0.5 < cos.mean() < 0.99 and (z[0] @ z[0].T)[np.triu_indices(16, 1)].max() < 0.995
    head = LayoutHead.load(Path(bundle.renderer.source).parent / "layout_head")

    def read(vectors):                 # as decode reads them: the head's scenes, refined against the bundle's CLIP
        scenes = head.predict(vectors, clip=bundle.clip, rounds=REFINE_ROUNDS)
        kept = [{(o.colour, o.shape) for o in s.objects} >= {("red", "circle"), ("blue", "square")} for s in scenes]
        return sum(kept), len({tuple(sorted((o.colour, o.shape, o.position) for o in s.objects)) for s in scenes})
    kept, places = read(z[0])
    assert kept >= 12 and places >= 8, (kept, places)
    assert read(ep.sample([text], 16, seed=3, temperature=0)[0])[1] == 1        # the mean alone: one scene
    with pytest.raises(InputError, match="num_samples"):
        ep.sample([text], 0)
    with pytest.raises(BundleError, match="cannot sample"):
        EmbeddingPrior(bundle.clip, ep.net).sample([text])


def test_shipped_captioner_names_colour_and_shape(bundle):
    examples = [world.example(500 + s, n_objects=1) for s in range(24)]
    captions = bundle.captioner.caption([e.image for e in examples])
    right = 0
    for e, c in zip(examples, captions):
        d = parse_caption(c)
        o = e.scene.objects[0]
        right += d is not None and d.phrases[0].shape == o.shape and d.phrases[0].colour == o.colour
    assert right >= 0.9 * len(examples), list(zip(captions, [e.scene.objects[0] for e in examples]))


def test_empty_image_list(bundle):
    assert bundle.captioner.caption([]) == []


def test_via_prior_needs_an_embedding_prior(bundle):
    from clipgpt_core.retrieval.nearest import NearestImages
    finder = NearestImages(Bundle("clip only", bundle.clip))
    with pytest.raises(ValueError, match="no caption->image-embedding prior"):
        finder.text_embedding("a red circle", "via prior")
    with pytest.raises(ValueError, match="text_mode"):
        finder.text_embedding("a red circle", "sideways")
    full = NearestImages(bundle)
    assert full.text_embedding("a red circle", "via prior").shape == (bundle.clip.dim,)
