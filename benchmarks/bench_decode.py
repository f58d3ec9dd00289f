"""Round trip through a CLIP image vector (issue 40, seed 003's question as a table): what does decode(CLIP(image)) keep?

    python -m benchmarks.bench_decode [--decoder DIR] [--layout-head DIR] [--n 100] [--guidances 1,3,5]
                                      [--layout-texts none,caption] [--threads 1] [--out benchmarks/results/decode.json]

Sources: the two-object scenes of benchmarks/scene_sets.py (seen and held-out colour-shape pairs, sizes and
backgrounds stated or not), each a scene the prompt is true of (planner.scene_for) drawn by the independent
renderer (benchmarks/alt_render.py), so no route has seen these pixels. Each source is encoded by the bundle's CLIP
and drawn back by two routes in the same run:
  * decode: Renderer.decode(vector) (unCLIP's decoder, models/decoder.py), at each --guidances scale, seed 0;
  * layout route: Renderer.decode(vector, method="layout") (models/layout_head.py reads the vector as a scene per
    3x3 cell, the shipped layout UNet draws it), at the renderer's guidance, seed 0, per --layout-texts: "none" (an
    empty prompt: no caption read) and "caption" (the predicted scene's own world caption); and `layout_head`, the
    scenes it draws judged as scenes (no drawing: the route's ceiling), `layout_head_alone` the head's scenes before
    analysis by synthesis (layout_head.refine);
  * caption route: Renderer.variations([source]) (today's: vector -> captioner -> words -> planner -> layout UNet).
Judged against the source's own scene by benchmarks/scene_judge.detect (no model), each a share of images:
colours / shapes (every source colour / shape on a distinct detected object), binding (every source object's
colour and shape on one detected object), size and cell (... and its size / 3x3 cell too), count (as many objects
as the source), background, scene (all of them at once); plus CLIP-I, the cosine of the re-encoded image to the
source vector. The sources themselves are judged too (`sources`: the judge's ceiling on these pixels).
Seconds per image: a batch of vectors per call, and one vector per call (the issue's "<= 1 s per 64x64 image").
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

from benchmarks import alt_render
from benchmarks.scene_judge import assign, detect
from benchmarks.scene_sets import scene_prompts
from clipgpt_core.models.planner import scene_for

EVAL_SEED = 1_000_000_007


def renderer_guidance(renderer) -> float:
    return float(getattr(renderer, "default_guidance", 2.5))
ATTRIBUTES = ("colours", "shapes", "binding", "size", "cell", "count", "background", "scene")
BARS = {"binding": 0.85, "background": 0.95, "count": 0.85}
CHUNK = 32


def judge_scene(scene, image) -> dict:
    """Per attribute: does `image` hold what `scene` (the source's truth) holds?"""
    background, objects = detect(image)
    return judge_objects(scene, background, [o.as_obj() for o in objects[:6]])


def judge_objects(scene, background, objects) -> dict:
    """Per attribute: do (background, world.Obj objects) hold what `scene` holds?"""
    src = list(scene.objects)

    def every(ok):
        return assign(src, objects, ok) is not None

    bound = lambda s, o: s.colour == o.colour and s.shape == o.shape   # noqa: E731
    out = {"colours": every(lambda s, o: s.colour == o.colour),
           "shapes": every(lambda s, o: s.shape == o.shape),
           "binding": every(bound),
           "size": every(lambda s, o: bound(s, o) and s.size == o.size),
           "cell": every(lambda s, o: bound(s, o) and s.position == o.position),
           "count": len(objects) == len(src),
           "background": background == scene.background}
    out["scene"] = (every(lambda s, o: bound(s, o) and s.size == o.size and s.position == o.position)
                    and out["count"] and out["background"])
    return out


def summarise(scenes, images, vectors=None, clip=None, verdicts=None) -> dict:
    verdicts = verdicts or [judge_scene(s, im) for s, im in zip(scenes, images)]
    out = {k: round(float(np.mean([v[k] for v in verdicts])), 4) for k in ATTRIBUTES}
    if vectors is not None:
        again = clip.encode_images(images)
        out["clip_i"] = round(float(np.mean(np.sum(again * vectors, axis=1))), 4)
    return out | {"n_images": len(verdicts)}


def sources(n: int, split: str, seed: int):
    """n two-object scenes of one split, and each drawn by the independent renderer."""
    prompts = scene_prompts(n, "two_objects", split, seed)
    rng = random.Random(seed + 1)
    scenes = [scene_for(p["description"], rng) for p in prompts]
    return scenes, [alt_render.render(s, rng, antialias=rng.random() < 0.5) for s in scenes]


def timed(fn, items) -> tuple[list, float]:
    """fn over items in chunks -> (outputs, seconds per item)."""
    t0, out = time.time(), []
    for i in range(0, len(items), CHUNK):
        out += fn(items[i:i + CHUNK])
    return out, (time.time() - t0) / max(1, len(items))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=None, help="bundle name or path (default: built-in)")
    p.add_argument("--decoder", default=None, help="an UnclipDecoderPipeline folder instead of the bundle's decoder/")
    p.add_argument("--n", type=int, default=100, help="sources per split (seen, held-out)")
    p.add_argument("--guidances", default="1,3,5", help="decoder guidance scales to compare ('' to skip the decoder)")
    p.add_argument("--steps", type=int, default=None, help="decoder sampling steps (default: its own)")
    p.add_argument("--no-caption-route", action="store_true", help="skip Renderer.variations")
    p.add_argument("--layout-head", default=None, help="a LayoutHead folder instead of the bundle's layout_head/")
    p.add_argument("--clip", default=None,
                   help="another CLIP (e.g. runs/clip_nohn) whose vectors are decoded, with a layout head trained on it")
    p.add_argument("--layout-texts", default="none,caption", help="layout route texts to compare ('' to skip)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--via-prior", action="store_true",
                   help="instead: two-object prompts -> a CLIP image vector (the caption->CLIP prior; CLIP-GPT) -> "
                        "decode, beside the text route (render), into decode_via_prior.json")
    p.add_argument("--out", default=None, help="default: benchmarks/results/decode.json (decode_via_prior.json)")
    args = p.parse_args(argv)
    if args.via_prior:
        return via_prior(args)
    args.out = args.out or "benchmarks/results/decode.json"

    import torch
    torch.set_num_threads(args.threads)
    from clipgpt_core.bundle import load_bundle
    from clipgpt_core.models import decoder as decoder_module
    bundle = load_bundle(args.bundle)
    renderer, clip = bundle.renderer, bundle.clip
    if args.decoder:
        renderer.decoder = decoder_module.load_decoder(args.decoder)
    if args.layout_head:
        from clipgpt_core.models.layout_head import LayoutHead
        renderer.layout_head = LayoutHead.load(args.layout_head)
    if args.clip:       # a benchmark-only CLIP encodes the sources and refines the head; the renderer keeps its text
        from clipgpt_core.models.clip import load_clip
        renderer.vector_clip = clip = load_clip(args.clip)
    layout_texts = [t for t in args.layout_texts.split(",") if t]
    head = decoder_module.layout_head_of(renderer) if layout_texts else None
    guidances = [float(g) for g in args.guidances.split(",") if g]
    if guidances:
        decoder_module.decoder_of(renderer).set_progress_bar_config(disable=True)
    renderer.pipe.set_progress_bar_config(disable=True)
    steps = args.steps or decoder_module.STEPS_DEFAULT

    report = {"settings": {"n_per_split": args.n, "guidances": guidances, "decoder_steps": steps,
                           "decoder": args.decoder or str(Path(renderer.source).parent / decoder_module.DECODER_DIR),
                           "layout_head": args.layout_head or str(Path(renderer.source).parent / "layout_head"),
                           "layout_texts": layout_texts, "clip": args.clip or "the bundle's",
                           "layout_guidance": renderer_guidance(renderer),
                           "threads": args.threads, "seed": EVAL_SEED},
              "sets": {}, "seconds_per_image": {}}
    pooled: dict[str, list] = {}
    for i, split in enumerate(("train", "heldout")):
        scenes, images = sources(args.n, split, EVAL_SEED + i)
        vectors = clip.encode_images(images)
        routes = {"sources": summarise(scenes, images, vectors, clip)}
        for g in guidances:
            out, sec = timed(lambda idx: renderer.decode(vectors[idx[0]:idx[-1] + 1], seed=0, guidance_scale=g,
                                                         steps=steps, method="unclip"), list(range(len(images))))
            routes[f"decode_g{g:g}"] = summarise(scenes, out, vectors, clip)
            report["seconds_per_image"][f"decode_g{g:g}_batched"] = round(sec, 3)
        if head is not None:
            for name, rounds in (("layout_head_alone", 0), ("layout_head", decoder_module.REFINE_ROUNDS)):
                predicted = head.predict(vectors, clip=clip, rounds=rounds)
                routes[name] = summarise(scenes, None, verdicts=[
                    judge_objects(s, p.background, list(p.objects)) for s, p in zip(scenes, predicted)])
        for text in layout_texts:
            out, sec = timed(lambda idx: renderer.decode(vectors[idx[0]:idx[-1] + 1], seed=0, method="layout",
                                                         text=text), list(range(len(images))))
            routes[f"layout_{text}"] = summarise(scenes, out, vectors, clip)
            report["seconds_per_image"][f"layout_{text}_batched"] = round(sec, 3)
        if not args.no_caption_route:
            out, sec = timed(lambda ims: renderer.variations(ims, num_images=1, seed=0), images)
            routes["caption_route"] = summarise(scenes, out, vectors, clip)
            report["seconds_per_image"]["caption_route_batched"] = round(sec, 3)
        report["sets"][split] = routes
        for name, r in routes.items():
            pooled.setdefault(name, []).append(r)
        print(split, json.dumps(routes, indent=1), flush=True)
    report["overall"] = {name: {k: round(float(np.mean([r[k] for r in rs])), 4) for k in rs[0] if k != "n_images"}
                         for name, rs in pooled.items()}
    # one vector per call, at the default guidance (the latency bar)
    g = decoder_module.GUIDANCE_DEFAULT
    if guidances:
        renderer.decode(vectors[:1], seed=0, guidance_scale=g, steps=steps, method="unclip")       # warm-up
        t0 = time.time()
        for k in range(5):
            renderer.decode(vectors[k % len(vectors)][None], seed=0, guidance_scale=g, steps=steps, method="unclip")
        report["seconds_per_image"][f"decode_g{g:g}_one_per_call"] = round((time.time() - t0) / 5, 3)
    for text in layout_texts:
        renderer.decode(vectors[:1], seed=0, method="layout", text=text)       # warm-up
        t0 = time.time()
        for k in range(5):
            renderer.decode(vectors[k % len(vectors)][None], seed=0, method="layout", text=text)
        report["seconds_per_image"][f"layout_{text}_one_per_call"] = round((time.time() - t0) / 5, 3)
    caption_clip_i = report["overall"].get("caption_route", {}).get("clip_i")

    def bars(route: str, one_per_call: str) -> dict:
        r = report["overall"][route]
        return {"route": route} | {k: {"value": r[k], "bar": b, "met": r[k] >= b} for k, b in BARS.items()} | {
            "clip_i_above_caption_route": {"value": r["clip_i"], "caption_route": caption_clip_i,
                                           "met": caption_clip_i is not None and r["clip_i"] > caption_clip_i},
            "cell": r["cell"], "seconds_per_image_one_per_call": report["seconds_per_image"][one_per_call]}

    score = lambda k: report["overall"][k]["binding"] + report["overall"][k]["clip_i"]   # noqa: E731
    report["bars_by_method"] = {}
    if guidances:
        best_unclip = max((k for k in report["overall"] if k.startswith("decode")), key=score)
        report["bars_by_method"]["unclip"] = bars(best_unclip, f"decode_g{g:g}_one_per_call")
    if layout_texts:
        best_layout = max((f"layout_{t}" for t in layout_texts), key=score)
        report["bars_by_method"]["layout"] = bars(best_layout, f"{best_layout}_one_per_call")
    report["bars"] = max(report["bars_by_method"].values(), key=lambda b: score(b["route"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print("overall", json.dumps(report["overall"], indent=1))
    print("bars", json.dumps(report["bars_by_method"], indent=1))



def via_prior(args) -> None:
    """Seed 003's "via the prior": prompt -> CLIP image vector -> decode(vector, method="layout"), judged on what the
    prompt states (both colour-shape pairs, so binding and count; the background and sizes where stated) against
    the text route (Renderer.render of the prompt), in one run."""
    import sys
    import torch
    torch.set_num_threads(args.threads)
    from clipgpt_core.bundle import load_bundle
    bundle = load_bundle(args.bundle)
    renderer = bundle.renderer
    renderer.pipe.set_progress_bar_config(disable=True)
    vectors = {"embedding_prior": lambda texts: bundle.embedding_prior.predict(texts)}
    if bundle.clip_gpt is not None:
        vectors["clip_gpt"] = lambda texts: bundle.clip_gpt.embed_batch([[t] for t in texts])
    report = {"command": " ".join(["python -m benchmarks.bench_decode", *sys.argv[1:]]), "n_per_split": args.n,
              "sets": {}}
    pooled: dict[str, list] = {}
    for i, split in enumerate(("train", "heldout")):
        prompts = scene_prompts(args.n, "two_objects", split, EVAL_SEED + 40 + i)
        texts = [p["text"] for p in prompts]
        routes = {}
        for name, fn in vectors.items():
            v = fn(texts)
            images = [im for k in range(0, len(v), CHUNK) for im in renderer.decode(v[k:k + CHUNK], seed=0)]
            routes[f"via_{name}"] = stated(prompts, images)
        routes["text_route"] = stated(prompts, renderer.render(texts, seed=0))
        report["sets"][split] = routes
        for name, r in routes.items():
            pooled.setdefault(name, []).append(r)
        print(split, json.dumps(routes), flush=True)
    report["overall"] = {name: {k: round(float(np.mean([r[k] for r in rs])), 4) for k in rs[0]}
                         for name, rs in pooled.items()}
    out = Path(args.out or "benchmarks/results/decode_via_prior.json")
    out.write_text(json.dumps(report, indent=2))
    print("overall", json.dumps(report["overall"], indent=1))


def stated(prompts, images) -> dict:
    """Per image, what its prompt states: binding (both colour-shape pairs on distinct objects), count, and the
    background and sizes where the prompt states them."""
    rows = []
    for p, im in zip(prompts, images):
        background, objects = detect(im)
        rows.append(stated_row(p["description"], background, [o.as_obj() for o in objects[:6]]))
    return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}


def stated_row(d, background, objs) -> dict:
    """One image's (detected background, world.Obj objects) against what description `d` states."""
    bound = assign(list(d.phrases), objs, lambda ph, o: ph.colour == o.colour and ph.shape == o.shape)
    sized = assign(list(d.phrases), objs, lambda ph, o: ph.colour == o.colour and ph.shape == o.shape
                   and ph.size in (None, o.size))
    return {"binding": bound is not None, "count": len(objs) == len(d.phrases), "sizes_as_stated": sized is not None,
            "background_as_stated": d.background in (None, background)}


if __name__ == "__main__":
    main()
