"""Benchmark the renderer: does a rendered image show what its prompt says?

    python -m benchmarks.bench_render [--bundle shapes] [--renderer DIR] [--baseline-renderer DIR]
                                      [--without-detail] [--n 48] [--n-scenes 24] [--out benchmarks/results/render.json]

Scenes (T2I-CompBench / GenEval categories; benchmarks/scene_sets.py, judged by scene_judge.py, no model): two objects
("a large red star and a small blue circle", seen and held-out colour-shape pairs), relations ("a red star
left of a blue circle"), counts ("three small yellow circles"), and captions of random world scenes (1-4 objects,
positions, sizes, backgrounds; seen and held-out), each phrased by world.caption_text's variations. Judged:
every object present, bound (its own colour and shape), relation, count (and with the right shape), extra
objects, outline by size, position cell, size, background, the whole caption true. Images as prompts:
variations of independent renders (benchmarks/alt_render.py) of the two-object scenes (objects and background
kept, objects moved), and the two-object prompts rendered via the caption->CLIP prior. The same prompts drawn
by alt_render (the judge's ceiling) and, with --baseline-renderer, by another pipeline (the shipped v3) in
the same run.

Drawing CLIP image vectors (unCLIP, issue 40), each suite with its own flags and result file:
    python -m benchmarks.bench_render --suite round_trip      # benchmarks/bench_decode.py -> decode.json
    python -m benchmarks.bench_render --suite interpolation   # benchmarks/bench_unclip.py -> render_interpolation.json
    python -m benchmarks.bench_render --suite diversity       # benchmarks/bench_unclip.py -> render_diversity.json

Single objects (the v3 benchmark, kept):

Prompts "a {size} {colour} {shape} [in the {position}] [on a {background} background]" (optional parts
each half of the time), over seen and held-out colour-shape combinations; `--seeds` images per prompt.
Reported per set:
  * pixel judge (independent of any model; the issue's bar): background = the WORLD.md palette colour
    nearest to most border pixels; object colour = the most frequent palette colour among the other
    pixels that lie near a palette colour (blended edge pixels do not count);
  * silhouette judge (benchmarks/silhouette.py, also model-free): the shape of the largest object's outline,
    matched against ideal shapes it rasterises itself; `silhouette_shape` = share of images whose judged shape is
    the prompted one (also split by prompted size);
  * the bundle's CLIP zero-shot (clipgpt_core.world.zeroshot protocol), per stated attribute;
  * diversity: mean pairwise cosine distance between CLIP image embeddings of one prompt's images;
  * seconds per 64x64 image at the renderer's default settings, one image per call.
Baselines in the same run: real ShapesWorld renders of the same prompts through the same judges (what a
perfect renderer would score), and the same pipeline with an untrained UNet (chance). `silhouette_ceiling`: the
silhouette judge on scenes of the same prompts drawn by clipgpt_core.world.render (random RenderStyle) and by the
independent benchmarks/alt_render.py, by size: the judge's own accuracy on real pixels.
"""
from __future__ import annotations

import argparse
import inspect
import itertools
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import alt_render
from benchmarks.scene_judge import NEAR  # RGB distance that still counts as a palette colour
from benchmarks.scene_sets import SCENE_SETS, alt_renders, judge_scenes, judge_variations, scene_prompts
from benchmarks.silhouette import judge_shape
from clipgpt_core import world
from clipgpt_core.world import zeroshot
from clipgpt_core.models.planner import scene_for
from clipgpt_core.bundle import load_bundle
from clipgpt_core.models.renderer import Renderer

EVAL_SEED = 1_000_000_007
# the palette by name: black and white name an object and a background alike
PALETTE = {f"bg-{k}": v for k, v in world.BACKGROUNDS.items()} | world.COLOURS
NAMES = [k.removeprefix("bg-") for k in PALETTE]
RGB = np.array(list(PALETTE.values()), dtype=np.float32)        # (P, 3)


# ----------------------------------------------------------------------------- prompts
def prompt_set(n: int, split: str, seed: int) -> list[dict]:
    rng = random.Random(seed)
    pairs = [(c, s) for c, s in itertools.product(world.COLOURS, world.SHAPES) if world.split_allows(c, s, split)]
    out = []
    for i in range(n):
        colour, shape = pairs[i % len(pairs)] if i < len(pairs) else rng.choice(pairs)
        p = {"colour": colour, "shape": shape, "size": rng.choice(list(world.SIZES)),
             "position": rng.choice(world.POSITIONS) if rng.random() < 0.5 else None,
             "background": rng.choice([b for b in world.BACKGROUNDS if b != colour]) if rng.random() < 0.5 else None}
        text = f"a {p['size']} {colour} {shape}"
        text += f" in the {p['position']}" if p["position"] else ""
        text += f" on a {p['background']} background" if p["background"] else ""
        out.append(p | {"text": text})
    return out


def real_renders(p: dict, k: int, rng: random.Random) -> list:
    """k ShapesWorld images that the prompt is true of, in random render styles."""
    images = []
    while len(images) < k:
        bg = p["background"] or rng.choice([b for b in world.BACKGROUNDS if b != p["colour"]])
        scene = world.sample_scene(rng, kinds=[(p["colour"], p["shape"])], background=bg, sizes=[p["size"]])
        if p["position"] in (None, scene.objects[0].position):
            images.append(world.render(scene, rng, world.RenderStyle.random(rng)))
    return images


def silhouette_ceiling(prompts: list[dict], k: int, rng: random.Random) -> dict:
    """The silhouette judge on k scenes per prompt, each drawn by world.render (random style) and by
    alt_render (anti-aliased or not): accuracy per renderer, overall and by prompted size."""
    hits = {"world_render": {"small": [], "large": []}, "alt_render": {"small": [], "large": []}}
    for p in prompts:
        for _ in range(k):
            bg = p["background"] or rng.choice([b for b in world.BACKGROUNDS if b != p["colour"]])
            scene = world.sample_scene(rng, kinds=[(p["colour"], p["shape"])], background=bg, sizes=[p["size"]])
            drawn = {"world_render": world.render(scene, rng, world.RenderStyle.random(rng)),
                     "alt_render": alt_render.render(scene, rng, antialias=rng.random() < 0.5)}
            for name, image in drawn.items():
                hits[name][p["size"]].append(judge_shape(image)[0] == p["shape"])
    out = {}
    for name, by_size in hits.items():
        every = by_size["small"] + by_size["large"]
        out[name] = {"all": float(np.mean(every))} | {s: float(np.mean(h)) if h else None for s, h in by_size.items()}
        out[name]["n_images"] = len(every)
    return out


# ----------------------------------------------------------------------------- judges
def pixel_judge(image) -> tuple[str, str | None]:
    """-> (background name, object colour name or None)."""
    x = np.asarray(image.convert("RGB"), dtype=np.float32)                    # (H, W, 3)
    dist = np.linalg.norm(x[:, :, None, :] - RGB[None, None], axis=-1)        # (H, W, P)
    nearest, d = dist.argmin(-1), dist.min(-1)
    names = np.array(NAMES)[nearest]                                          # (H, W)
    border = np.concatenate([names[:2].ravel(), names[-2:].ravel(), names[:, :2].ravel(), names[:, -2:].ravel()])
    values, counts = np.unique(border, return_counts=True)
    background = values[counts.argmax()]
    mask = (names != background) & (d <= NEAR) & np.isin(names, list(world.COLOURS))
    if not mask.any():
        return background, None
    values, counts = np.unique(names[mask], return_counts=True)
    return background, values[counts.argmax()]


def judge(clip, prompts: list[dict], images: list[list]) -> dict:
    """images[i] = the images for prompts[i]."""
    flat = [(p, im) for p, ims in zip(prompts, images) for im in ims]
    pix = [pixel_judge(im) for _, im in flat]
    out = {"pixel_colour": float(np.mean([c == p["colour"] for (p, _), (_, c) in zip(flat, pix)]))}
    for size in world.SIZES:
        sized = [c == p["colour"] for (p, _), (_, c) in zip(flat, pix) if p["size"] == size]
        out[f"pixel_colour_{size}"] = float(np.mean(sized)) if sized else None
    stated = [(p, b) for (p, _), (b, _) in zip(flat, pix) if p["background"]]
    out["pixel_background"] = float(np.mean([b == p["background"] for p, b in stated])) if stated else None
    shape_hits = [(p["size"], judge_shape(im)[0] == p["shape"]) for p, im in flat]
    out["silhouette_shape"] = float(np.mean([h for _, h in shape_hits]))
    for size in world.SIZES:
        sized = [h for s, h in shape_hits if s == size]
        out[f"silhouette_shape_{size}"] = float(np.mean(sized)) if sized else None
    embs = clip.encode_images([im for _, im in flat])
    known = [{"colour": p["colour"], "shape": p["shape"], "size": p["size"]} for p, _ in flat]
    for attribute in zeroshot.TEMPLATES:
        keep = [i for i, (p, _) in enumerate(flat) if p[attribute]]
        if not keep:
            continue
        knowns = [{k: v for k, v in known[i].items() if k != attribute} for i in keep]
        pred = zeroshot.classify(clip, embs[keep], attribute, knowns)
        out[f"clip_{attribute}"] = float(np.mean([pr == flat[i][0][attribute] for pr, i in zip(pred, keep)]))
    k = len(images[0])
    per_prompt = embs.reshape(len(prompts), k, -1)
    sims = np.einsum("pid,pjd->pij", per_prompt, per_prompt)
    off = ~np.eye(k, dtype=bool)
    out["diversity"] = float(np.mean(1 - sims[:, off]))
    out["n_images"] = len(flat)
    return out


# ----------------------------------------------------------------------------- scenes
def scene_benchmark(renderer, n: int, k: int, baseline=None, settings: dict | None = None,
                    baseline_settings: dict | None = None, without_detail: bool = False) -> dict:
    settings, baseline_settings = settings or {}, baseline_settings or {}
    report = {}
    rng = random.Random(EVAL_SEED + 10)
    two = None
    for i, (kind, splits) in enumerate(SCENE_SETS.items()):
        for j, split in enumerate(splits):
            prompts = scene_prompts(n, kind, split, EVAL_SEED + 100 * i + j)
            two = prompts if (kind, split) == ("two_objects", "train") else two
            name = f"{kind}_{'seen' if split == 'train' else split}"
            entry = {"example_prompts": [p["text"] for p in prompts[:3]],
                     "renderer": judge_scenes(prompts, render_all(renderer, prompts, k, EVAL_SEED, **settings)),
                     "alt_render": judge_scenes(prompts, alt_renders(prompts, k, rng))}
            if without_detail:       # the same renderer, the same seeds, the detail pass off: what the pass adds
                entry["without_detail"] = judge_scenes(prompts, render_all(renderer, prompts, k, EVAL_SEED,
                                                                           **(settings | {"detail": False})))
            if baseline is not None:
                entry["baseline"] = judge_scenes(prompts, render_all(baseline, prompts, k, EVAL_SEED, **baseline_settings))
            report[name] = entry
            print(name, json.dumps({m: entry[m] for m in ("renderer", "without_detail", "baseline") if m in entry}),
                  flush=True)
    if renderer.captioner is not None:
        sources = [alt_render.render(scene_for(p["description"], rng), rng, antialias=True) for p in two]
        var = [renderer.variations([src], num_images=k, seed=EVAL_SEED + i, **settings) for i, src in enumerate(sources)]
        report["variations"] = judge_variations(two, sources, var)
        print("variations", json.dumps(report["variations"]), flush=True)
    if renderer.embedding_prior is not None:
        report["via_prior_two_objects"] = judge_scenes(two, render_all(renderer, two, k, EVAL_SEED, via_prior=True,
                                                                       **settings))
        print("via prior", json.dumps(report["via_prior_two_objects"]), flush=True)
    return report


# ----------------------------------------------------------------------------- runs
def render_all(renderer, prompts, k: int, seed: int, **kw) -> list[list]:
    return [renderer.render([p["text"]], num_images=k, seed=seed + i, **kw) for i, p in enumerate(prompts)]


def seconds_per_image(renderer, prompts, n: int = 8, **kw) -> float:
    renderer.render([prompts[0]["text"]], seed=0, **kw)                     # warm-up
    times = []
    for i in range(n):
        t = time.perf_counter()
        renderer.render([prompts[i % len(prompts)]["text"]], seed=i, **kw)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def untrained(renderer: Renderer) -> Renderer:
    """The same pipeline with the UNet at random init: the chance baseline."""
    import torch
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(renderer.pipe.unet.config)
    pipe = type(renderer.pipe)(**(renderer.pipe.components | {"unet": unet}))
    pipe.set_progress_bar_config(disable=True)
    return Renderer(pipe, "untrained UNet")


def load_renderer(directory, bundle, device):
    """A pipeline directory drawn with the bundle's CLIP text tower, captioner and caption->CLIP prior; refused when
    its lineage names another text tower (its UNet would read text it was not trained on: not a fair baseline)."""
    from clipgpt_core.bundle import lineage_mismatch
    why = lineage_mismatch(directory, "renderer", {"clip_text": bundle.clip.fingerprint("text")})
    if why:
        raise SystemExit(f"{directory}: {why}; compare it on its own bundle (--bundle) instead")
    return Renderer.load(directory, device, bundle.clip, bundle.captioner, bundle.embedding_prior)


SCENE_BARS = {("two_objects_seen", "binding"): 0.85, ("two_objects_heldout", "binding"): 0.85,
              ("relation_seen", "relation"): 0.85, ("count_seen", "count"): 0.80, ("count_seen", "count_shape"): 0.70,
              ("world_captions_seen", "outline_small"): 0.85, ("two_objects_seen", "outline_small"): 0.85}


def scene_bars(scenes: dict) -> dict:
    bars = {f"{s} {m} >= {v}": scenes[s]["renderer"].get(m, 0) >= v for (s, m), v in SCENE_BARS.items()}
    extra = max(scenes[s]["renderer"]["extra"] for s in scenes if "renderer" in scenes[s])
    bars["extra objects <= 0.10 (worst set)"] = extra <= 0.10
    backgrounds = [scenes[s]["renderer"]["background"] for s in scenes if "renderer" in scenes[s]
                   and "background" in scenes[s]["renderer"]]
    bars["background >= 0.95 (mean of sets)"] = float(np.mean(backgrounds)) >= 0.95
    if "variations" in scenes:
        bars["variations keep both objects >= 0.80"] = scenes["variations"]["objects_kept"] >= 0.80
    if "via_prior_two_objects" in scenes:
        bars["via-prior binding >= 0.75"] = scenes["via_prior_two_objects"]["binding"] >= 0.75
    return bars


UNCLIP_SUITES = ("round_trip", "interpolation", "diversity")   # drawing CLIP vectors (issue 40)


def main():
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--suite")
    known, rest = pre.parse_known_args()
    if known.suite == "round_trip":        # decode(CLIP(image)) per attribute: benchmarks/bench_decode.py
        from benchmarks import bench_decode
        return bench_decode.main(rest)
    if known.suite in UNCLIP_SUITES:       # benchmarks/bench_unclip.py
        from benchmarks import bench_unclip
        return bench_unclip.main(known.suite, rest)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=None, help="bundle name or path (default: built-in); its CLIP judges")
    p.add_argument("--renderer", default=None, help="a pipeline directory to test instead of the bundle's renderer")
    p.add_argument("--baseline-renderer", default=None,
                   help="a second pipeline drawing the same prompts in the same run (the shipped v3: "
                        "git archive a356b9a assets/shapes/renderer | tar -x -C /tmp/v3)")
    p.add_argument("--baseline-guidance-scale", type=float, default=4.0,
                   help="the baseline's guidance (4: the v3 renderer's shipped default)")
    p.add_argument("--suite", choices=("all", "scenes", "single", "guidance") + UNCLIP_SUITES, default="all",
                   help="guidance: two-object and count prompts at each --guidances value (how the default was chosen); "
                        "round_trip (bench_decode), interpolation and diversity (bench_unclip): their own flags")
    p.add_argument("--guidances", default="1.5,2,2.5,4,6")
    p.add_argument("--n", type=int, default=48, help="single-object prompts per set")
    p.add_argument("--n-scenes", type=int, default=24, help="prompts per scene set")
    p.add_argument("--seeds", type=int, default=4, help="images per prompt")
    p.add_argument("--out", default="benchmarks/results/render.json")
    p.add_argument("--no-baseline", action="store_true", help="skip the untrained-UNet baseline")
    p.add_argument("--without-detail", action="store_true",
                   help="also draw the scene sets with the detail pass off (same renderer and seeds), and time it")
    p.add_argument("--guidance-scale", type=float, default=None, help="instead of the renderer's default")
    p.add_argument("--steps", type=int, default=None, help="sampling steps instead of the renderer's default")
    p.add_argument("--device", default="cpu", help="where to render (seconds per image are this device's)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (1 is faster on a machine busy with other jobs)")
    args = p.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    t0 = time.time()
    # strict=False: only the CLIP and the renderer are read, so a bundle being retrained can be measured
    bundle = load_bundle(args.bundle, device=args.device, strict=False)
    renderer = load_renderer(args.renderer, bundle, args.device) if args.renderer else bundle.renderer
    if renderer is None:
        raise SystemExit(f"bundle {bundle.name} has no renderer trained against its CLIP: train one "
                         f"(python -m clipgpt_train.bundle --out DIR) or pass --renderer DIR")
    baseline = load_renderer(args.baseline_renderer, bundle, args.device) if args.baseline_renderer else None
    for r in (renderer, baseline):
        if r is not None:
            r.pipe.set_progress_bar_config(disable=True)
    defaults = {k: v.default for k, v in inspect.signature(renderer.render).parameters.items()
                if k in ("guidance_scale", "steps")}
    settings = {k: v for k, v in (("guidance_scale", args.guidance_scale), ("steps", args.steps)) if v is not None}
    defaults |= settings
    baseline_settings = settings | {"guidance_scale": args.baseline_guidance_scale}
    report = {"command": " ".join(["python -m", __spec__.name, *sys.argv[1:]]), "renderer": renderer.source,
              "baseline_renderer": baseline.source if baseline else None,
              "baseline_settings": baseline_settings if baseline else None, "clip": bundle.clip.model_name,
              "device": args.device, "threads": args.threads, "prompts_per_set": args.n,
              "prompts_per_scene_set": args.n_scenes, "images_per_prompt": args.seeds, "defaults": defaults,
              "pixel_judge": f"nearest WORLD.md palette colour; edge pixels farther than {NEAR} RGB units ignored",
              "silhouette_judge": "benchmarks/silhouette.py: largest object's outline vs self-rasterised ideal shapes",
              "scene_judge": "benchmarks/scene_judge.py: colour regions, each outline judged alone", "sets": {}}
    report["bar"] = {}
    if args.suite == "guidance":
        prompts = scene_prompts(args.n_scenes, "two_objects", "train", EVAL_SEED) + \
            scene_prompts(args.n_scenes, "count", "train", EVAL_SEED + 200)
        report["guidance"] = {g: judge_scenes(prompts, render_all(renderer, prompts, args.seeds, EVAL_SEED,
                                                                  **(settings | {"guidance_scale": float(g)})))
                              for g in args.guidances.split(",")}
        for g, r in report["guidance"].items():
            print(f"guidance {g}: " + ", ".join(f"{k} {r[k]:.2f}" for k in ("binding", "extra", "outline_small",
                                                                            "outline_large", "count_shape")))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
        return
    if args.suite in ("all", "scenes"):
        report["scenes"] = scene_benchmark(renderer, args.n_scenes, args.seeds, baseline, settings, baseline_settings,
                                           args.without_detail)
        report["bar"] |= scene_bars(report["scenes"])
    if args.suite in ("all", "single"):
        single_objects(args, bundle, renderer, baseline, settings, baseline_settings, report)
    report["seconds_per_image"] = round(seconds_per_image(renderer, [{"text": "a red star left of a blue circle"}],
                                                          **settings), 3)
    report["bar"]["seconds_per_image <= 1"] = report["seconds_per_image"] <= 1
    if args.without_detail:
        report["without_detail_seconds_per_image"] = round(seconds_per_image(
            renderer, [{"text": "a red star left of a blue circle"}], **(settings | {"detail": False})), 3)
    if baseline is not None:
        report["baseline_seconds_per_image"] = round(seconds_per_image(baseline, [{"text": "a red star left of a "
                                                                                  "blue circle"}], **baseline_settings), 3)
        report["seconds_ratio_to_baseline"] = round(report["seconds_per_image"] / report["baseline_seconds_per_image"], 2)
    report["seconds"] = round(time.time() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print_report(report)


def single_objects(args, bundle, renderer, baseline, settings, baseline_settings, report) -> None:
    sets = {"seen": prompt_set(args.n, "train", EVAL_SEED), "heldout": prompt_set(args.n, "heldout", EVAL_SEED + 1)}
    rng = random.Random(EVAL_SEED + 2)
    for name, prompts in sets.items():
        images = render_all(renderer, prompts, args.seeds, EVAL_SEED, **settings)
        report["sets"][f"renderer_{name}"] = judge(bundle.clip, prompts, images)
        report["sets"][f"real_renders_{name}"] = judge(bundle.clip, prompts, [real_renders(q, args.seeds, rng)
                                                                              for q in prompts])
        if baseline is not None:
            report["sets"][f"baseline_{name}"] = judge(bundle.clip, prompts, render_all(baseline, prompts, args.seeds,
                                                                                         EVAL_SEED, **baseline_settings))
        print(name, json.dumps(report["sets"][f"renderer_{name}"]), flush=True)
    everything = sets["seen"] + sets["heldout"]
    report["silhouette_ceiling"] = silhouette_ceiling(everything, args.seeds, random.Random(EVAL_SEED + 3))
    print("silhouette ceiling", json.dumps(report["silhouette_ceiling"]), flush=True)
    if not args.no_baseline:
        few = everything[::4]
        report["sets"]["untrained_unet_all"] = judge(bundle.clip, few, render_all(untrained(renderer), few, args.seeds,
                                                                                 EVAL_SEED, **settings))
    a, b = report["sets"]["renderer_seen"], report["sets"]["renderer_heldout"]
    report["renderer_all"] = {k: (a[k] + b[k]) / 2 for k in a                # seen and held-out weigh the same
                              if isinstance(a[k], float) and isinstance(b.get(k), float)}
    every = report["renderer_all"]
    bars = {"silhouette_shape_large": 0.93, "pixel_colour_large": 0.90, "pixel_background": 0.95}
    report["bar"] |= {f"single {k} >= {v}": every.get(k) is not None and every[k] >= v for k, v in bars.items()}


SCENE_COLUMNS = ["present", "binding", "relation", "count", "count_shape", "extra", "outline_small", "outline_large",
                 "position", "size", "background", "caption_true"]


def print_report(report: dict) -> None:
    if "scenes" in report:
        print("\n| set | drawn by | " + " | ".join(SCENE_COLUMNS) + " |\n|---|---|" + "---|" * len(SCENE_COLUMNS))
        for name, entry in report["scenes"].items():
            rows = entry.items() if "renderer" in entry else [("renderer", entry)]
            for who, r in rows:
                if isinstance(r, dict) and "n_images" in r:
                    print(f"| {name} | {who} | " + " | ".join("" if r.get(c) is None else f"{r[c]:.2f}"
                                                          for c in SCENE_COLUMNS) + " |")
        if "variations" in report["scenes"]:
            print("variations:", report["scenes"]["variations"])
    if report["sets"]:
        cols = ["pixel_colour", "pixel_background", "silhouette_shape", "silhouette_shape_small",
                "silhouette_shape_large", "clip_colour", "clip_shape", "diversity"]
        print("\n| set | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
        rows = dict(report["sets"]) | {"renderer_all": report["renderer_all"]}
        for name, r in rows.items():
            print(f"| {name} | " + " | ".join("" if r.get(c) is None else f"{r[c]:.3f}" for c in cols) + " |")
        print("\nsilhouette judge on real renders of the same prompts' scenes (ceiling):")
        for name, r in report["silhouette_ceiling"].items():
            print(f"  {name}: " + ", ".join(f"{k} {'' if r[k] is None else f'{r[k]:.3f}'}" for k in ("all", "small", "large"))
                  + f" ({r['n_images']} images)")
    print(f"\nseconds per 64x64 image (defaults {report['defaults']}): {report['seconds_per_image']}"
          + (f" (baseline {report['baseline_seconds_per_image']}, x{report['seconds_ratio_to_baseline']})"
             if "baseline_seconds_per_image" in report else "")
          + (f"; without the detail pass {report['without_detail_seconds_per_image']}"
             if "without_detail_seconds_per_image" in report else ""))
    print("bar:", json.dumps(report["bar"], indent=1))


if __name__ == "__main__":
    main()
