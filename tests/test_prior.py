"""The caption prior: initialised from the CLIP text tower, KV-cache sampling, scoring, training."""
import random
import numpy as np
import pytest
import torch

from clipgpt_core import load_bundle
from clipgpt_core.world.captions import is_valid_caption
from clipgpt_core.models.clip import create_clip
from clipgpt_core.models.caption_prior import CaptionPrior
from clipgpt_train.prior import PriorTrainConfig, train
from clipgpt_core.world.corpus import vocabulary, world_captions


@pytest.fixture(scope="module")
def fresh():
    """A prior made from a random-init CLIP text tower (no training)."""
    clip = create_clip("shapes-clip")
    return clip, CaptionPrior.from_clip(clip)


def clip_hidden_states(model, tokens):
    """What open_clip's encode_text computes before pooling: every position's final-norm state."""
    with torch.no_grad():
        x = model.token_embedding(tokens) + model.positional_embedding
        return model.ln_final(model.transformer(x, attn_mask=model.attn_mask))


def test_init_copies_the_clip_text_tower(fresh):
    clip, prior = fresh
    tokens = clip.tokenizer(["a small red circle in the top left", "two blue stars"])
    want = clip_hidden_states(clip.model, tokens)
    with torch.no_grad():
        got = prior.gpt.hidden(prior.gpt.embed(tokens))
    assert torch.allclose(got, want, atol=1e-5)
    # and a shorter input gives the same states: the tower really is causal
    with torch.no_grad():
        short = prior.gpt.hidden(prior.gpt.embed(tokens[:, :6]))
    assert torch.allclose(short, want[:, :6], atol=1e-5)


def test_kv_cache_sampling_equals_no_cache():
    # the trained prior: an untrained one spreads its mass over ~45k tokens, so top-p's float32 cumulative
    # sum decides the nucleus edge by rounding, and the cached and uncached paths round differently
    prior = load_bundle().prior
    for kw in ({"temperature": 1.0}, {"temperature": 0.7, "top_k": 40}, {"temperature": 1.0, "top_p": 0.9},
               {"temperature": 0.0}):
        a = prior.sample(6, seed=5, prefix="a red", **kw)
        b = prior.sample(6, seed=5, prefix="a red", use_cache=False, **kw)
        assert a == b, kw
        assert all(t.startswith("a red") for t in a)


def test_cached_and_uncached_logits_agree(fresh):
    _, prior = fresh
    from clipgpt_core.models.caption_prior import KVCache
    tokens = prior.token_batch(["a large green diamond on a black background"])
    with torch.no_grad():
        full = prior.gpt(tokens)
        cache = KVCache(prior.cfg, 1, tokens.device, torch.float32)
        steps = [prior.gpt.logits(prior.gpt.hidden(prior.gpt.embed(tokens[:, i:i + 1]), cache)) for i in range(tokens.shape[1])]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-4)


def test_sampling_arguments_are_checked(fresh):
    _, prior = fresh
    for bad in ({"n": 0}, {"temperature": -1}, {"top_p": 0}, {"prefix": "circle " * 40}):
        with pytest.raises(ValueError):
            prior.sample(**({"n": 2} | bad))
    with pytest.raises(TypeError):
        prior.log_prob("a red circle")


def test_log_prob_is_the_sum_of_token_log_probs(fresh):
    _, prior = fresh
    texts = ["a red circle", "two large stars in the top"]
    per_token = prior.token_log_probs(texts)
    assert [len(p) for p in per_token] == [len(prior.encode(t)) + 1 for t in texts]
    assert np.allclose(prior.log_prob(texts), [p.sum() for p in per_token], atol=1e-4)
    assert (prior.log_prob(texts) < 0).all()


def test_target_log_probs_equal_the_full_log_softmax(fresh):
    """Logits once per distinct context (shared beginnings, padding skipped) give what every position's full
    log_softmax gives, with and without prefix embeddings (rows of one group share their contexts)."""
    _, prior = fresh
    texts = ["a red circle", "a red star in the top left", "a red star in the top right", "two blue stars", "a"]
    tokens = prior.token_batch(texts)
    gpt = prior.gpt
    with torch.no_grad():
        plain = gpt(tokens).float().log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0] * (tokens[:, 1:] != 0)
        assert torch.allclose(gpt.target_log_probs(tokens), plain, atol=1e-5)
        prefix = torch.randn(2, 3, prior.cfg.width).repeat_interleave(torch.tensor([3, 2]), dim=0)
        full = gpt(tokens, prefix)[:, -tokens.shape[1]:-1].float().log_softmax(-1)
        want = full.gather(-1, tokens[:, 1:, None])[..., 0] * (tokens[:, 1:] != 0)
        assert torch.allclose(gpt.target_log_probs(tokens, prefix, groups=[0, 0, 0, 1, 1]), want, atol=1e-5)
        assert torch.allclose(gpt.target_log_probs(tokens, prefix), want, atol=1e-5)     # every row its own group
        # the training loss is their mean over real tokens
        assert torch.isclose(gpt(tokens, loss=True), -plain.sum() / (tokens[:, 1:] != 0).sum(), atol=1e-5)


def test_training_lowers_the_loss(tmp_path):
    held_out = world_captions(random.Random(123), 64)
    before = CaptionPrior.from_clip(load_bundle().clip).log_prob(held_out).mean()
    prior = train(PriorTrainConfig(out=str(tmp_path / "prior"), steps=25, batch=32, warmup=5, lr=3e-3,
                                   checkpoint=str(tmp_path / "ckpt")))
    after = prior.log_prob(held_out).mean()
    assert after > before + 5, (before, after)
    loaded = CaptionPrior.load(tmp_path / "prior")
    assert loaded.cfg.writes == prior.token_ids(vocabulary())        # it writes the world's words, and says so
    assert np.allclose(loaded.log_prob(held_out[:4]), prior.log_prob(held_out[:4]), atol=0.05)  # float16 weights


def test_a_prior_writes_only_its_words_and_scores_them_over_them(fresh, bundle):
    """restrict_writes: sampling and beam search write only the tokens the prior was trained on; a text of those
    tokens is scored over them (the full head's log-probs renormalised there), another text over the whole head;
    training reads the whole head. The shipped prior and CLIP-GPT write exactly the world's vocabulary."""
    from clipgpt_core.models.beam_search import beam_search
    _, prior = fresh
    words = ["a", "red", "blue", "circle", "star", "and"]
    ids = torch.tensor(prior.token_ids(words))
    texts = ["a red circle and a blue star", "a blue circle"]
    tokens = prior.token_batch(texts)
    gpt = prior.gpt
    with torch.no_grad():
        full = gpt(tokens).float()[:, :-1]
        gpt.restrict_writes(ids.tolist())
        renorm = full[..., ids].log_softmax(-1)
        at = torch.searchsorted(ids, tokens[:, 1:].clamp(min=ids[0]))
        want = renorm.gather(-1, at[..., None])[..., 0] * (tokens[:, 1:] != 0)
        assert torch.allclose(gpt.target_log_probs(tokens), want, atol=1e-5)
        other = prior.token_batch(["a dog"])                           # "dog" is not written: the whole head
        plain = gpt(other).float().log_softmax(-1)[:, :-1].gather(-1, other[:, 1:, None])[..., 0]
        assert torch.allclose(gpt.target_log_probs(other), plain, atol=1e-5)
        gpt.train()
        assert torch.isclose(gpt(tokens, loss=True), -(full.log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
                             * (tokens[:, 1:] != 0)).sum() / (tokens[:, 1:] != 0).sum(), atol=1e-5)
        gpt.eval()
        sampled = {t for s in prior.sample(50, temperature=1.5, seed=1) for t in prior.encode(s)}
        assert sampled and sampled <= set(ids.tolist())
        beams = beam_search(prior, torch.zeros(1, 0, prior.cfg.width), num_beams=4)[0]
        assert all(set(b) <= set(ids.tolist()) for b, _ in beams)
    gpt.restrict_writes([])
    assert gpt.writes is None and gpt.cfg.writes == []
    world_ids = bundle.prior.token_ids(vocabulary())
    assert bundle.prior.cfg.writes == world_ids and bundle.clip_gpt.net.cfg.writes == world_ids


def test_shipped_prior_speaks_the_world_language(bundle):
    samples = bundle.prior.sample(100, temperature=1.0, seed=0)
    assert np.mean([is_valid_caption(s) for s in samples]) >= 0.8   # untrained: ~0; see the benchmark
    good, bad = bundle.prior.log_prob(["a small red circle in the top left", "left top the in circle red small a"])
    assert good > bad + 10


def test_pretrained_text_tower_generates():
    """open_clip ViT-B-32 at random init (no download): the same code builds and samples a prior."""
    b = load_bundle("open_clip:ViT-B-32/random-init")
    assert b.prior.cfg.width == 512 and b.prior.cfg.layers == 12
    out = b.prior.sample(2, seed=0, prefix="a photo of")
    assert len(out) == 2 and all(o.startswith("a photo of") for o in out)
    assert np.isfinite(b.prior.log_prob(["a photo of a dog"])).all()
