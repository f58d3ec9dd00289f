"""Benchmark the caption prior, the CLIP->GPT captioner and the caption->CLIP prior.

    python -m benchmarks.bench_captions [--bundle shapes] [--n 500] [--out benchmarks/results/captions.json]

Prior: held-out perplexity (fresh captions of seen and of held-out colour-shape pairs); validity
(the share of 1,000 samples that clipgpt_core.world.captions parses); distinct share; attribute-value
coverage (the share of WORLD.md's values that occur in the samples).
Captioner, on fresh images (seen and held-out combinations apart, drawn by our renderer and by
the independent one in benchmarks/alt_render.py): per attribute, how often the
caption of a single-object image states it ("stated") and states the right value ("right");
the share of captions true of their image; two-object scenes named with exactly their colour-shape
pairs (exact_pairs_two_objects); two-object binding (stated colour-shape pairs that
exist in the image); BLEU-4 and CIDEr (pycocoevalcap) against 5 generated references per image.
Caption->CLIP: cosine(predicted, true image embedding) vs the raw text embedding, and
text->image R@1/@5 of full single-object descriptions via the prior vs via the raw text.
Speed, in one run on this machine: sampling tokens/s with the KV cache, without it (the seed's
clip_gpt re-ran the whole sequence each step), and Hugging Face transformers' GPT-2 `generate`
of the same width, depth and vocabulary; captions/s.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import write_report
from benchmarks.bench_clip import EVAL_SEED, SETS, draw, recall, single_object_set

from clipgpt_core import world
from clipgpt_core.bundle import load_bundle
from clipgpt_core.world.captions import parse_caption, stated_attributes
from clipgpt_core.models.caption_prior import CaptionGPT, CaptionPrior, generate
from clipgpt_core.world.corpus import world_captions

ATTRS = ["colour", "shape", "size", "position", "background"]


def bench_prior(prior: CaptionPrior, n_samples: int = 1000) -> dict:
    out = {}
    for split in ("train", "heldout"):
        texts = world_captions(random.Random(EVAL_SEED + 20), 1000, split=split)
        nll = -sum(lp.sum() for lp in prior.token_log_probs(texts))
        n_tokens = sum(len(prior.encode(t)) + 1 for t in texts)
        out[f"perplexity_{'seen' if split == 'train' else 'heldout'}"] = float(np.exp(nll / n_tokens))
    samples = prior.sample(n_samples, temperature=1.0, seed=EVAL_SEED)
    parsed = [parse_caption(s) for s in samples]
    out["validity"] = float(np.mean([d is not None for d in parsed]))
    out["distinct"] = len(set(samples)) / len(samples)
    found = {(a, str(v)) for d in parsed if d for i in range(len(d.phrases)) for a, v in stated_attributes(d, i).items()}
    values = {(a, str(v)) for a, vs in world.ATTRIBUTES.items() for v in vs}
    out["coverage"] = len(found & values) / len(values)
    out["examples"] = samples[:8]
    return out


def bench_captioner(bundle, n: int, split: str, seed: int, renderer: str = "world") -> dict:
    cap = bundle.captioner
    scenes, images = single_object_set(n, split, seed, renderer)
    top_beam = cap.caption(images, num_beams=3, rerank=False)
    captions = cap.caption(images)                  # the default: 5 beams re-ranked by CLIP
    out_beam = {a: sum(stated_attributes(parse_caption(c)).get(a) == (s.background if a == "background"
                                                                       else getattr(s.objects[0], a))
                       for c, s in zip(top_beam, scenes)) / n for a in ATTRS}
    parsed = [parse_caption(c) for c in captions]
    out = {"mode": cap.mode, "top_beam_right": out_beam, "parsed": float(np.mean([d is not None for d in parsed])),
           "true": float(np.mean([d is not None and world.is_true(d, s) for d, s in zip(parsed, scenes)]))}
    for attr in ATTRS:
        stated = right = 0
        for d, s in zip(parsed, scenes):
            said = stated_attributes(d).get(attr)
            o = s.objects[0]
            truth = s.background if attr == "background" else getattr(o, attr)
            stated += said is not None
            right += said == truth
        out[attr] = {"stated": stated / n, "right": right / n}
    # two objects: each stated colour-shape pair must belong to one object of the image
    rng = random.Random(seed + 1)
    pairs_right = pairs = 0
    two_scenes, two_images = [], []
    while len(two_scenes) < n // 2:
        s = world.sample_scene(rng, n_objects=2, split=split)
        if s.objects[0].colour != s.objects[1].colour and s.objects[0].shape != s.objects[1].shape:
            two_scenes.append(s)
            two_images.append(draw(s, rng, renderer))
    two_caps = cap.caption(two_images)
    for c, s in zip(two_caps, two_scenes):
        d = parse_caption(c)
        for p in (d.phrases if d else ()):
            if p.colour:
                pairs += 1
                pairs_right += any(o.colour == p.colour and o.shape == p.shape for o in s.objects)
    out["binding"] = {"pairs_right": pairs_right / max(1, pairs), "pairs_stated": pairs}
    out["true_two_objects"] = float(np.mean([(d := parse_caption(c)) is not None and world.is_true(d, s)
                                             for c, s in zip(two_caps, two_scenes)]))
    out["exact_pairs_two_objects"] = float(np.mean([exact_pairs(parse_caption(c), s)
                                                   for c, s in zip(two_caps, two_scenes)]))
    out.update(bleu_cider(captions + two_caps, scenes + two_scenes, seed))
    out["examples"] = [[c, world.caption_text(world.describe(s, random.Random(0)))] for c, s in zip(captions[:6], scenes)]
    return out


def exact_pairs(d, scene) -> bool:
    """The caption names exactly the scene's colour-shape pairs: one phrase per object, each with a
    colour, and the multiset of (colour, shape) equal to the scene's."""
    if d is None or d.count is not None and d.count != len(scene.objects):
        return False
    phrases = list(d.phrases) * (d.count or 1)
    if any(p.colour is None for p in phrases):
        return False
    return sorted((p.colour, p.shape) for p in phrases) == sorted((o.colour, o.shape) for o in scene.objects)


def bleu_cider(captions, scenes, seed) -> dict:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    rng = random.Random(seed + 2)
    refs = {i: [world.caption_text(world.describe(s, rng), rng) for _ in range(5)] for i, s in enumerate(scenes)}
    hyps = {i: [c or "empty"] for i, c in enumerate(captions)}
    bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
    cider, _ = Cider().compute_score(refs, hyps)
    return {"BLEU-4": float(bleu[3]), "CIDEr": float(cider)}


def bench_embedding_prior(bundle, n: int, split: str, seed: int) -> dict:
    clip, ep = bundle.clip, bundle.embedding_prior
    scenes, images = single_object_set(n, split, seed)
    embs = clip.encode_images(images)
    texts = [world.caption_text(world.describe(s, random.Random(i))) for i, s in enumerate(scenes)]
    out = {"cos_raw_text": float((clip.encode_texts(texts) * embs).sum(1).mean()),
           "cos_via_prior": float((ep.predict(texts) * embs).sum(1).mean())}

    class ViaPrior:   # recall() encodes queries with encode_texts; route them through the prior
        encode_texts = staticmethod(ep.predict)
    out["raw"] = recall(clip, scenes, embs)
    out["via_prior"] = recall(ViaPrior, scenes, embs)
    return out


def timed(fn, repeats=3) -> float:
    fn()                                   # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


@torch.no_grad()
def seed_style_generate(gpt: CaptionGPT, start: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """The seed's clip_gpt.generate: pad to the whole context and run the full model (logits at
    every position) for each new token, no cache."""
    seq = start
    for _ in range(new_tokens):
        padded = torch.zeros(seq.shape[0], gpt.cfg.context_length, dtype=torch.long)
        padded[:, :seq.shape[1]] = seq
        probs = gpt(padded)[:, seq.shape[1] - 1].float().softmax(-1)
        seq = torch.cat([seq, torch.multinomial(probs, 1)], dim=1)
    return seq


def bench_speed(prior: CaptionPrior, captioner, batch: int = 16, new_tokens: int = 24) -> dict:
    """Random-init models of the prior's exact size, so no sample stops early and every method
    generates batch x new_tokens tokens. The loops are compared reading the whole head (as the seed's and Hugging
    Face's do); then the KV cache reading only the rows of the tokens the prior writes (cfg.writes, end-of-text left
    out so that no row stops early)."""
    from dataclasses import replace
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    cfg = replace(prior.cfg, writes=[])
    gpt = CaptionGPT(cfg).eval()
    start = torch.full((batch, 1), cfg.sot_token)
    ours = timed(lambda: generate(gpt, start, max_new_tokens=new_tokens, temperature=1.0, use_cache=True))
    writes = [t for t in prior.cfg.writes if t != cfg.eot_token]
    if writes:
        gpt.writes = torch.tensor(writes)
        ours_writes = timed(lambda: generate(gpt, start, max_new_tokens=new_tokens, temperature=1.0, use_cache=True))
        gpt.restrict_writes([])
    nocache = timed(lambda: generate(gpt, start, max_new_tokens=new_tokens, temperature=1.0, use_cache=False))
    seed_t = timed(lambda: seed_style_generate(gpt, start, new_tokens), repeats=1)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.width,
                                    n_layer=cfg.layers, n_head=cfg.heads, tie_word_embeddings=cfg.tie_head)).eval()
    with torch.no_grad():
        hf_t = timed(lambda: hf.generate(start, do_sample=True, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                         pad_token_id=0, eos_token_id=cfg.eot_token, top_k=0))
    tokens = batch * new_tokens
    images = [world.example(EVAL_SEED + i, n_objects=1).image for i in range(32)]
    cap_t = timed(lambda: captioner.caption(images), repeats=1)
    return {"batch": batch, "new_tokens": new_tokens, "threads": torch.get_num_threads(),
            "tokens_per_s": {"kv_cache": tokens / ours, "seed_clip_gpt_style": tokens / seed_t,
                             "no_cache_last_position_only": tokens / nocache, "hf_gpt2_generate": tokens / hf_t},
            "kv_cache_vs_seed_style": seed_t / ours, "kv_cache_vs_no_cache_last_position": nocache / ours,
            "kv_cache_vs_hf_generate": hf_t / ours,
            **({"written_tokens": len(writes), "kv_cache_written_tokens_only": tokens / ours_writes,
                "written_only_vs_whole_head": ours / ours_writes} if writes else {}),
            "captions_per_s_default": len(images) / cap_t}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bundle", default=None)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--out", default="benchmarks/results/captions.json")
    p.add_argument("--speed-only", action="store_true", help="re-measure speed into an existing --out file")
    p.add_argument("--threads", type=int, default=2, help="torch threads (1 gives steadier ratios on a busy machine)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    bundle = load_bundle(args.bundle)
    if args.speed_only:
        report = json.loads(Path(args.out).read_text())
        report["speed"] = bench_speed(bundle.prior, bundle.captioner) | {"command": " ".join(["python -m", __spec__.name, *sys.argv[1:]])}
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(json.dumps(report["speed"], indent=2))
        return
    report = {"command": " ".join(["python -m", __spec__.name, *sys.argv[1:]]), "n_images": args.n, "prior": bench_prior(bundle.prior)}
    for name, (split, renderer, offset) in SETS.items():
        report.setdefault("captioner", {})[name] = bench_captioner(bundle, args.n, split, EVAL_SEED + 30 + offset,
                                                                   renderer)
        if bundle.embedding_prior is not None and renderer == "world":
            report.setdefault("embedding_prior", {})[name] = bench_embedding_prior(
                bundle, 2 * args.n, split, EVAL_SEED + offset)
    report["speed"] = bench_speed(bundle.prior, bundle.captioner)
    report["seconds"] = round(time.time() - t0, 1)
    write_report(report, args.out)


if __name__ == "__main__":
    main()
