"""What unCLIP offers, measured (issue 40; bench_render's `diversity` and `interpolation` suites run these).

    python -m benchmarks.bench_render --suite diversity [--n 12] [--guidances 1,2.5,5,10] [--samples 8]
    python -m benchmarks.bench_render --suite interpolation [--n 24] [--frames 6]

diversity (seed 003's central figure, into benchmarks/results/render_diversity.json and docs/figures/
diversity_fidelity.png): two-object prompts of benchmarks/scene_sets.py (seen and held-out pairs; sizes and the
background stated or not, places never), `--samples` images a prompt at each guidance scale, by three routes:
  * text: Renderer.render (text conditioning: the planner samples a scene for the prompt, the layout UNet draws it);
  * prior_mean: the caption->CLIP prior's one vector a prompt (EmbeddingPrior.predict), decoded `--samples` times
    (the noise differs, the vector does not);
  * prior_samples_tT: `--samples` vectors a prompt from the sampling prior (EmbeddingPrior.sample) at residual
    scale T (each of --temperatures), each decoded.
fidelity = the share of images the prompt is true of (benchmarks/scene_judge.detect, no model: both colour-shape
pairs on distinct objects, two objects, stated sizes and background); diversity = for each attribute the prompt
leaves open (each object's 3x3 cell, its size and the background where unstated), the distinct values among a
prompt's samples over the most there could be (min(samples, values)), averaged; layouts = distinct detected scenes
(objects' colour, shape, size, cell and the background) among a prompt's samples / samples.

interpolation (into benchmarks/results/render_interpolation.json): pairs of two-object scenes drawn by the
independent renderer, Renderer.interpolate(z_a, z_b, frames): the ends judged against their sources (the scene
judge's binding), the path's CLIP similarity to z_b rising frame by frame (share of monotone strips), the cosine
between neighbouring frames' re-encodings; and text diffs (Renderer.text_diff: "a {colour} {shape}" -> "a {other
colour} {shape}" on one-object scenes, theta 0, 0.25, 0.5, 0.75): at each theta, the share of frames showing an
object of that shape in the new colour (recoloured), the background and a single object kept (kept), and both.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import alt_render, write_report
from benchmarks.bench_decode import judge_scene, stated_row
from benchmarks.scene_judge import assign, detect
from benchmarks.scene_sets import scene_prompts
from clipgpt_core import world
from clipgpt_core.models.planner import scene_for

EVAL_SEED = 1_000_000_007
FIGURE = Path("docs/figures/diversity_fidelity.png")


def read(image, d) -> dict:
    """What the judge sees of a prompt's objects in one image: truth of what is stated, and the open values."""
    background, objects = detect(image)
    objs = [o.as_obj() for o in objects[:6]]
    phrases = list(d.phrases)
    true = all(stated_row(d, background, objs).values())
    bound = assign(phrases, objs, lambda ph, o: ph.colour == o.colour and ph.shape == o.shape)
    open_values = {}
    if d.background is None:
        open_values["background"] = background
    if bound is not None:
        for k, ph in enumerate(phrases):
            o = bound[k]
            open_values[f"cell{k}"] = o.position
            if ph.size is None:
                open_values[f"size{k}"] = o.size
    layout = (background, tuple(sorted((o.colour, o.shape, o.size, o.position) for o in objs)))
    return {"true": true, "open": open_values, "layout": layout}


def spread(reads: list[dict], d) -> tuple[float, float]:
    """(diversity, distinct layouts) of one prompt's samples."""
    n = len(reads)
    possible = {"background": len(world.BACKGROUNDS), "cell0": 9, "cell1": 9, "size0": 2, "size1": 2}
    keys = {k for r in reads for k in r["open"]}
    shares = [len({r["open"][k] for r in reads if k in r["open"]}) / min(n, possible[k]) for k in sorted(keys)]
    return (float(np.mean(shares)) if shares else 0.0), len({r["layout"] for r in reads}) / n


def diversity(args) -> dict:
    import matplotlib  # noqa: F401  -- the figure (pip install -r requirements-bench.txt); checked before the work
    from clipgpt_core.bundle import load_bundle
    bundle = load_bundle(args.bundle)
    renderer = bundle.renderer
    renderer.pipe.set_progress_bar_config(disable=True)
    prior = bundle.embedding_prior
    guidances = [float(g) for g in args.guidances.split(",")]
    prompts = [p for i, split in enumerate(("train", "heldout"))
               for p in scene_prompts(args.n, "two_objects", split, EVAL_SEED + 60 + i)]
    texts = [p["text"] for p in prompts]
    s = args.samples
    mean = prior.predict(texts)                                                  # (P, D)
    temperatures = [float(t) for t in args.temperatures.split(",")]
    sampled = {t: prior.sample(texts, s, seed=0, temperature=t) for t in temperatures}     # (P, S, D) each
    draw = {"text": lambda t, g: renderer.render(t, num_images=s, guidance_scale=g, seed=0),
            "prior_mean": lambda idx, g: renderer.decode(mean[idx], num_images=s, seed=0, guidance_scale=g)}
    for t in temperatures:
        draw[f"prior_samples_t{t:g}"] = lambda idx, g, t=t: renderer.decode(
            sampled[t][idx].reshape(-1, mean.shape[1]), seed=0, guidance_scale=g)
    routes = list(draw)
    rows = {r: [] for r in routes}
    t0 = time.time()
    for g in guidances:
        for route in routes:
            images = []
            for k in range(0, len(prompts), 4):             # 4 prompts x S images a call
                idx = list(range(k, min(k + 4, len(prompts))))
                images += draw[route]([texts[i] for i in idx] if route == "text" else idx, g)
            fid, div, lay = [], [], []
            for i, p in enumerate(prompts):
                reads = [read(im, p["description"]) for im in images[i * s:(i + 1) * s]]
                fid.append(np.mean([r["true"] for r in reads]))
                d, lo = spread(reads, p["description"])
                div.append(d)
                lay.append(lo)
            rows[route].append({"guidance": g, "fidelity": round(float(np.mean(fid)), 4),
                                "diversity": round(float(np.mean(div)), 4), "layouts": round(float(np.mean(lay)), 4)})
            print(route, rows[route][-1], f"{time.time() - t0:.0f}s", flush=True)
    report = {"command": " ".join(["python -m benchmarks.bench_render", *sys.argv[1:]]),
              "settings": {"prompts": len(prompts), "samples": s, "guidances": guidances,
                           "temperatures": temperatures, "steps": renderer.default_steps, "seed": EVAL_SEED},
              "routes": rows, "minutes": round((time.time() - t0) / 60, 1)}
    plot(rows, FIGURE)
    return report


def plot(rows: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.2, 4), dpi=120)
    for route, marker in zip(rows, "osDv^<>"):
        xs, ys = [r["fidelity"] for r in rows[route]], [r["diversity"] for r in rows[route]]
        ax.plot(xs, ys, marker=marker, label=route.replace("_", " "))
        for r in rows[route]:
            ax.annotate(f"{r['guidance']:g}", (r["fidelity"], r["diversity"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 3))
    ax.set_xlabel("fidelity (prompt true of the image)")
    ax.set_ylabel("diversity (open attributes' values seen)")
    ax.set_title("Diversity against fidelity, guidance marked", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def interpolation(args) -> dict:
    from clipgpt_core.bundle import load_bundle
    bundle = load_bundle(args.bundle)
    renderer, clip = bundle.renderer, bundle.clip
    renderer.pipe.set_progress_bar_config(disable=True)
    rng = random.Random(EVAL_SEED + 70)
    prompts = scene_prompts(2 * args.n, "two_objects", "train", EVAL_SEED + 71)
    scenes = [scene_for(p["description"], rng) for p in prompts]
    images = [alt_render.render(sc, rng, antialias=rng.random() < 0.5) for sc in scenes]
    z = clip.encode_images(images)
    t0 = time.time()
    ends, monotone, steps_cos = [], [], []
    for k in range(args.n):
        a, b = 2 * k, 2 * k + 1
        strip = renderer.interpolate(z[a], z[b], frames=args.frames, seed=0)
        again = clip.encode_images(strip)                                          # (F, D)
        ends += [judge_scene(scenes[a], strip[0])["binding"], judge_scene(scenes[b], strip[-1])["binding"]]
        to_b = again @ z[b]
        monotone.append(bool(np.all(np.diff(to_b) >= -0.02)))
        steps_cos.append(float(np.mean(np.sum(again[1:] * again[:-1], axis=1))))
    interp = {"pairs": args.n, "frames": args.frames, "ends_bound": round(float(np.mean(ends)), 4),
              "monotone_towards_b": round(float(np.mean(monotone)), 4),
              "neighbour_frames_cosine": round(float(np.mean(steps_cos)), 4)}
    print("interpolation", interp, flush=True)
    # text diffs on one-object scenes: recolour through CLIP text alone, judged at each amount
    thetas = [0.0, 0.25, 0.5, 0.75]                        # the Render tab's; at 1 the image's vector is gone
    rows = {t: {"recoloured": [], "kept": [], "both": []} for t in thetas}
    for k in range(args.n):
        sc = world.sample_scene(rng, n_objects=1, split="train")
        o = sc.objects[0]
        new = rng.choice([c for c in world.COLOURS if c not in (o.colour, sc.background)
                          and world.split_allows(c, o.shape, "train")])
        zi = clip.encode_images([alt_render.render(sc, rng)])[0]
        strip = renderer.text_diff(zi, f"a {o.colour} {o.shape}", f"a {new} {o.shape}", thetas, seed=0)
        for t, im in zip(thetas, strip):
            background, objects = detect(im)
            objs = [x.as_obj() for x in objects[:6]]
            recoloured = any(x.colour == new and x.shape == o.shape for x in objs)
            kept = background == sc.background and len(objs) == 1
            for key, ok in (("recoloured", recoloured), ("kept", kept), ("both", recoloured and kept)):
                rows[t][key].append(ok)
    diff = {"scenes": args.n, "by_theta": {f"{t:g}": {key: round(float(np.mean(v)), 4) for key, v in r.items()}
                                           for t, r in rows.items()}}
    print("text_diff", diff, flush=True)
    return {"command": " ".join(["python -m benchmarks.bench_render", *sys.argv[1:]]), "interpolation": interp,
            "text_diff": diff, "minutes": round((time.time() - t0) / 60, 1)}


def main(suite: str, argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=None)
    p.add_argument("--n", type=int, default=12 if suite == "diversity" else 24,
                   help="prompts per split (diversity) / pairs and text diffs (interpolation)")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--guidances", default="1,2.5,5,10")
    p.add_argument("--temperatures", default="1,0.5", help="the sampling prior's residual scales (a route each)")
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    report = diversity(args) if suite == "diversity" else interpolation(args)
    write_report(report, args.out or f"benchmarks/results/render_{suite}.json")
