"""Explain benchmark: can each method recover planted functions with known answers, and the shipped
classifier's logits?

    python -m benchmarks.bench_explain                 # -> benchmarks/results/explain.json and a table
    python -m benchmarks.bench_explain --n 512 --sets alt,ours --methods search,dissect
    python -m benchmarks.bench_explain --end-to-end-only     # seconds for 512 PIL images, embedding included

For every (function, image set, method): the top explanation, whether it states the answer
(targets.states_answer), held-out Spearman rho (and the ceiling any tie-free x could reach on those
scores, and linear probes' rho: ridge regressions on the whole image embedding, see
linear_probe_spearman; one text's CLIP_t is itself a linear readout of the embedding, so they estimate
the most any text can reach with this CLIP), whether the
CLIP_t was centred (explain()'s centre="auto" chooses per function), held-out R^2, the prior log-prob
of the top explanation and of the answer written as a caption, and seconds per explanation (images embedded beforehand; embedding 512 images takes ~2-4 s more).
Also per row: whether the explanation is minimal (states the answer and no attribute the function does not
depend on), and on --fresh other images of the same renderer, rho(f, predict()) beside a ridge probe fitted
on the labels explain() got (for the classifier's logits, also on the independent renderer's fresh images: fitted
on ours, read on its), and beside both the claims oracle: as many claims as the explanation has, read from ground
truth instead of CLIP (claims_oracle); the summary groups functions by attribute family. For the classifier's
logits, which are functions of pixels, the render check (--render-check N): the AUC of the logit between
N renders of the best explanation and renders of N random world captions.
Image sets: "alt" = benchmarks/alt_render.py (an independent renderer, written from WORLD.md) and
"ours" = world.render, on seeds no training run draws (1,000,000+).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import alt_render
from clipgpt_core import load_bundle
from clipgpt_core.explainers import DEFAULT_PRIOR_WEIGHT, METHODS, all_claims, claim_holds, claim_text, explain
from clipgpt_core.explainers import render_check, spearman_ties
from clipgpt_core.explainers.planted import PLANTED, world_sample
from clipgpt_core.explainers.targets import ClassifierTarget
from clipgpt_core.models.classifier import load_classifier
from clipgpt_core.world.captions import stated_values, states_answer

ROOT = Path(__file__).resolve().parents[1]
RENDERERS = {"alt": alt_render.redraw, "ours": "ours"}   # image set -> world_sample's renderer
SEEDS = {"alt": 1_000_000, "ours": 2_000_000}            # image set -> its first seed (no training run draws these)
CLAIMS = all_claims(relations=True)                      # what claims_oracle reads perfectly


def answer_caption(answer: dict) -> str:
    """The answer as a short caption, for its prior log-prob."""
    if "relation" in answer:
        return claim_text({"relation": answer["relation"]})
    one = lambda v: v[0] if isinstance(v, (tuple, list)) else v  # noqa: E731
    words = [one(answer[k]) for k in ("size", "colour") if k in answer]
    text = " ".join(["a"] + words + [one(answer.get("shape", "circle"))])
    text = text.replace("a orange", "an orange")
    if "position" in answer:
        text += f" in the {one(answer['position'])}"
    if "background" in answer:
        text += f" on a {answer['background']} background"
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256, help="images per set (half fit, half held out)")
    ap.add_argument("--sets", default="alt,ours", help="image sets for the planted functions: alt, ours")
    ap.add_argument("--ours-functions", type=int, default=8, help="planted functions also run on 'ours' (first N)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--classifier", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--prior-weight", type=float, default=DEFAULT_PRIOR_WEIGHT, help="explain()'s prior_weight")
    ap.add_argument("--centre", choices=["auto", "yes", "no"], default="auto",
                    help="CLIP_t: auto (explain()'s default), centred (yes) or raw cosine (no)")
    ap.add_argument("--end-to-end", type=int, default=512, metavar="N",
                    help="also time explain() on N PIL images, embedding included, per method (0: skip)")
    ap.add_argument("--end-to-end-only", action="store_true", help="only that timing (no recovery runs)")
    ap.add_argument("--render-check", type=int, default=8, metavar="N",
                    help="classifier logits: render each best explanation N times and N random world captions, "
                         "AUC of the logit between them (seed 000's closed loop; 0: skip)")
    ap.add_argument("--probe-train", type=int, default=2048, metavar="N",
                    help="images (same renderer, other seeds) the linear-probe reference is fitted on")
    ap.add_argument("--fresh", type=int, default=512, metavar="N",
                    help="fresh images (the first N probe-set images) predict() is read on")
    ap.add_argument("--units", action=argparse.BooleanOptionalAction, default=True,
                    help="also the hidden units of the classifier and the logits and hidden units of a second CNN "
                         "trained here for another task (benchmarks/cells_cnn.py), and explain_units' time for its "
                         "128-unit layer")
    ap.add_argument("--bundle", default="shapes", help="the bundle to explain with (a name or a directory)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "explain.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    bundle = load_bundle(args.bundle, strict=False)   # Explain reads the CLIP, prior and renderer, not the captioner
    methods = args.methods.split(",")
    if args.end_to_end_only:
        timing = end_to_end(bundle, args.end_to_end, methods)
        out = Path(args.out).with_name("explain_end_to_end.json")
        out.write_text(json.dumps(timing | {"command": "python " + " ".join(sys.argv)}, indent=1))
        print(f"wrote {out}")
        return
    sets, probe_sets = {}, {}       # image sets explained; the probe reference's training images
    for name, seed in SEEDS.items():
        if name in args.sets.split(",") or (name == "ours" and args.classifier):
            images, scenes = world_sample(args.n, seed=seed, renderer=RENDERERS[name])
            t = time.time()
            sets[name] = (images, scenes, bundle.clip.encode_images(images))
            print(f"{name}: {args.n} images embedded in {time.time() - t:.1f} s", flush=True)
            images, scenes = world_sample(args.probe_train, seed=seed + 500_000, renderer=RENDERERS[name])
            probe_sets[name] = (images, scenes, bundle.clip.encode_images(images))
    # (kind, function name, set, scores, answer, single attribute, probe scores, embeddings, probe embeddings,
    #  scenes, probe scenes)
    jobs = []
    for s in [x for x in args.sets.split(",") if x]:     # --sets "": the classifier only
        fns = list(PLANTED.values()) if s == "alt" else list(PLANTED.values())[:args.ours_functions]
        for p in fns:
            if p.draw is None:
                (images, scenes, emb), (pi, ps, pe) = sets[s], probe_sets[s]
            else:              # a relation: its own scenes, where both objects are there and where they are varies
                seed = SEEDS[s]
                images, scenes = world_sample(args.n, seed=seed, renderer=RENDERERS[s], draw=p.draw)
                pi, ps = world_sample(args.probe_train, seed=seed + 500_000, renderer=RENDERERS[s], draw=p.draw)
                emb, pe = bundle.clip.encode_images(images), bundle.clip.encode_images(pi)
            jobs.append(("planted", p.name, s, p.score(scenes, images), p.answer, p.single_attribute,
                         p.score(ps, pi), emb, pe, scenes, ps))
    clf = load_classifier() if args.classifier else None
    if clf is not None:
        images, _, _ = sets["ours"]
        for out in ClassifierTarget.outputs(clf):
            if not out.startswith("unit"):
                t = ClassifierTarget(clf, out)
                jobs.append(("classifier", out, "ours", t.score(images), t.answer, True, t.score(probe_sets["ours"][0]),
                             sets["ours"][2], probe_sets["ours"][2], sets["ours"][1], probe_sets["ours"][1]))
    layer_timing = None
    if args.units:
        more, layer_timing = unit_jobs(bundle, clf, sets["ours"], probe_sets["ours"])
        jobs += more
    rows = []
    centre = {"auto": "auto", "yes": True, "no": False}[args.centre]
    for kind, fname, s, f, answer, single, f_probe, emb, probe_emb, scenes, probe_scenes in jobs:
        lp_answer = None if answer is None else float(bundle.prior.log_prob([answer_caption(answer)])[0])
        probe = linear_probe_spearman(probe_emb, f_probe, emb, f)
        # fresh images (the probe set's first --fresh): explanations predict there, beside a ridge probe
        # fitted on the same labels explain() got (all N explained images)
        fresh_emb, f_fresh = probe_emb[:args.fresh], f_probe[:args.fresh]
        probe["fresh_probe_spearman"] = fresh_probe(emb, f, fresh_emb, f_fresh)
        probe["fresh_answer_alone"] = answer_alone(bundle, emb, f, answer, fresh_emb, f_fresh)
        # the classifier's logits on the independent renderer's fresh images: explanations fitted on ours, read there
        other = None
        if kind == "classifier" and "alt" in probe_sets:
            other_images, _, other_emb = probe_sets["alt"]
            other = (ClassifierTarget(clf, fname).score(other_images[:args.fresh]), other_emb[:args.fresh])
            probe["other_renderer_probe_spearman"] = fresh_probe(emb, f, other[1], other[0])
        for m in methods:
            t = time.time()
            options = {"relations": True} if m == "partial" and answer and "relation" in answer else {}
            ranked = explain(bundle, emb, f, method=m, progress=False, prior_weight=args.prior_weight,
                             centre=centre, **options)
            sec = time.time() - t
            best = ranked[0]
            row = {"kind": kind, "family": family(kind, answer), "function": fname, "set": s, "method": m,
                   "answer": None if answer is None else {k: list(v) if isinstance(v, tuple) else v
                                                          for k, v in answer.items()},
                   "single_attribute": single, "text": best.text,
                   "recovered": None if answer is None else recovered(best, answer), "spearman": best.spearman,
                   "spearman_h": best.spearman_h, "r2": best.r2,
                   "minimal": None if answer is None else minimal(best.text, answer),
                   "minimal_headline": None if answer is None else minimal(headline(best), answer),
                   "fresh_spearman_h": spearman_ties(f_fresh, best.predict(fresh_emb)),
                   "fresh_spearman": spearman_ties(f_fresh, best.clip_t(fresh_emb)),
                   "other_renderer_spearman_h": None if other is None else spearman_ties(other[0], best.predict(other[1])),
                   "fresh_claims_oracle": claims_oracle(scenes, f, probe_scenes, f_fresh,
                                                        len(best.terms or [best.text])),
                   "learned_spearman": best.learned_spearman,   # inversion: the learned tokens themselves
                   "spearman_ceiling": best.extra["spearman_ceiling"], **probe,
                   "centred": best.extra["centred"], "log_prior": best.log_prior,
                   "log_prior_answer": lp_answer, "seconds": sec,
                   "top3": [e.text for e in ranked[:3]]}
            if "reward_curve" in best.extra:          # rl: the policy's mean reward, first and last five steps
                curve = best.extra["reward_curve"]
                row["reward_first_last"] = [float(np.mean(curve[:5])), float(np.mean(curve[-5:]))]
            if kind == "classifier" and args.render_check and bundle.renderer is not None:
                # f is a function of pixels: does it fire on renders of its explanation?
                check = render_check(bundle, ClassifierTarget(clf, fname), best, n=args.render_check)
                row["render_auc"] = check.auc
            rows.append(row)
            print(f"{kind:10s} {fname:22s} {s:4s} {m:9s} {'·' if row['recovered'] is None else '✓' if row['recovered'] else '✗'}{'m' if row['minimal'] else ' '} fresh={row['fresh_spearman_h']:5.2f}/{probe['fresh_probe_spearman']:4.2f}/{row['fresh_claims_oracle']:4.2f} rho={best.spearman:6.3f} rho_h={row['spearman_h']:5.2f} "
                  f"(ceil {row['spearman_ceiling']:.2f}) r2={best.r2:6.3f} lp={best.log_prior:6.1f} {sec:5.1f}s  "
                  f"{best.text}", flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"config": vars(args), "rows": rows, "summary": summarise(rows)}, indent=1))
    summary = summarise(rows)
    print_table(summary)
    timing = end_to_end(bundle, args.end_to_end, methods) if args.end_to_end else None
    Path(args.out).write_text(json.dumps({"config": vars(args), "rows": rows, "summary": summary,
                                         "end_to_end": timing, "layer_timing": layer_timing}, indent=1))
    print(f"wrote {args.out}")


def linear_probe_spearman(emb_train: np.ndarray, f_train: np.ndarray, emb: np.ndarray, f: np.ndarray,
                          seed: int = 0) -> dict:
    """References, not explanations: ridge regressions of f on the whole image embedding, read on
    explain()'s held-out half. Any text's CLIP_t (centred or raw) is one linear readout of the
    (L2-normalised) embedding, so a probe estimates the most a single text can reach with this CLIP.
      probe_spearman / probe_spearman_h: fitted on --probe-train other images of the same renderer (8x the
        labels explain() gets); rho of the probe itself / of h(probe), h isotonic on the fit half as
        explain() fits it (h's plateaus tie images, which a 0/1 f rewards);
      probe_fit_spearman / probe_fit_spearman_h: fitted on explain()'s own fit half, the labels an
        explanation has."""
    from clipgpt_core.explainers import spearman_ties, monotone_fit
    from sklearn.linear_model import RidgeCV
    perm = np.random.default_rng(seed).permutation(len(f))            # explain()'s split for this seed
    fit, held = np.sort(perm[:len(f) // 2]), np.sort(perm[len(f) // 2:])

    def ridge(e, y):        # fitted on (e, y), read on every image explained
        return RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(e, y).predict(emb)

    def rho_h(x):           # rho(f, h(x)) on the held-out half, h isotonic on the fit half
        return spearman_ties(f[held], monotone_fit(x[fit], f[fit], True).predict(x[held]))

    x_big, x_fit = ridge(emb_train, f_train), ridge(emb[fit], f[fit])
    return {"probe_spearman": spearman_ties(f[held], x_big[held]), "probe_spearman_h": rho_h(x_big),
            "probe_fit_spearman": spearman_ties(f[held], x_fit[held]), "probe_fit_spearman_h": rho_h(x_fit)}


def fresh_probe(emb, f, fresh_emb, f_fresh) -> float:
    """rho on fresh images of a ridge probe fitted on the labels explain() got: the reference for predict()."""
    from sklearn.linear_model import RidgeCV
    return spearman_ties(f_fresh, RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(emb, f).predict(fresh_emb))


_TRUTH: dict[int, tuple] = {}      # id(scene list) -> (the list, kept so that its id is not reused; claim truth)


def claims_oracle(scenes, f, fresh_scenes, f_fresh, k: int) -> float:
    """rho on fresh images of the best sum of k claims read without error: orthogonal matching pursuit over every
    claim's ground truth (claim_holds, each column standardised), fitted on the labels explain() got. What an
    explanation of k claims would reach if CLIP read each claim perfectly: the gap below it is CLIP's reading of
    the claims, the gap between it and the probe what no k claims state."""
    from sklearn.linear_model import OrthogonalMatchingPursuit

    def truth(xs):
        if id(xs) not in _TRUTH:
            _TRUTH[id(xs)] = (xs, np.array([[claim_holds(c, x) for c in CLAIMS] for x in xs], np.float64))
        return _TRUTH[id(xs)][1]
    t, t_fresh = truth(scenes), truth(fresh_scenes)[:len(f_fresh)]   # fresh: the first len(f_fresh) scenes
    keep = t.std(0) > 0
    mu, sd = t[:, keep].mean(0), t[:, keep].std(0)
    omp = OrthogonalMatchingPursuit(n_nonzero_coefs=min(k, int(keep.sum()))).fit((t[:, keep] - mu) / sd, f)
    return spearman_ties(f_fresh, omp.predict((t_fresh[:, keep] - mu) / sd))


def unit_jobs(bundle, clf, explained, probe) -> tuple[list, dict]:
    """Jobs for the classifier's hidden units and for a second CNN's logits and hidden units (trained here,
    benchmarks/cells_cnn.py), each on the 'ours' images with the probe set's images as references; and the
    seconds explain_units takes for that CNN's whole 128-unit layer on the explained images."""
    from benchmarks import cells_cnn
    from clipgpt_core.explainers import explain_units, layer_activations
    images, scenes, emb = explained
    p_images, p_scenes, p_emb = probe
    t = time.time()
    cells = cells_cnn.train(cells_cnn.CellsConfig())
    print(f"cells CNN trained in {time.time() - t:.0f} s; accuracy on other images "
          f"{cells_cnn.accuracy(cells, p_images[:512], p_scenes[:512])}", flush=True)
    jobs = []
    logits, p_logits = cells_cnn.outputs(cells, images), cells_cnn.outputs(cells, p_images)
    jobs += [("cells CNN", name, "ours", f, cells_cnn.answer(name), True, p_logits[name], emb, p_emb, scenes, p_scenes)
             for name, f in logits.items()]
    for kind, model in (("classifier units", clf), ("cells CNN units", cells)):
        acts = layer_activations(model, "penultimate", images)
        p_acts = layer_activations(model, "penultimate", p_images)
        alive = [u for u in range(acts.shape[1]) if np.ptp(acts[:, u]) > 1e-6 and np.ptp(p_acts[:, u]) > 1e-6]
        jobs += [(kind, f"unit {u}", "ours", acts[:, u].astype(np.float64), None, True,
                  p_acts[:, u].astype(np.float64), emb, p_emb, scenes, p_scenes) for u in alive]
    t = time.time()
    table = explain_units(bundle, cells, "penultimate", images)
    timing = {"layer": "cells CNN penultimate", "units": len(table.rows), "images": len(images),
              "seconds": round(time.time() - t, 1), "function": "explain_units (images embedded inside)"}
    print(f"explain_units: {timing}", flush=True)
    return jobs, timing


def family(kind: str, answer: dict | None) -> str:
    """The attribute family a function belongs to (colour, shape, size, position, background), two
    attributes, relations, or a model's logits or hidden units."""
    if kind == "cells CNN":
        return "cells CNN logits"
    if kind in ("classifier units", "cells CNN units"):
        return f"{kind.replace(' units', '')} hidden units"
    if kind != "planted":
        return "classifier logits"
    if "relation" in answer:
        return "planted: relation"
    return f"planted: {next(iter(answer))}" if len(answer) == 1 else "planted: two attributes"


def recovered(best, answer: dict) -> bool:
    """The explanation states the answer: its text, or for a weighted sum its largest term (the rest are the
    amounts by which the unit also moves)."""
    if best.extra.get("kind") == "weighted sum":
        return states_answer(best.terms[0]["text"], answer) and best.terms[0]["sign"] > 0
    return states_answer(best.text, answer)


def headline(best) -> str:
    """What an explanation claims first: a weighted sum's headline term (the rest are amounts), else its text."""
    return best.terms[0]["text"] if best.extra.get("kind") == "weighted sum" else best.text


def answer_alone(bundle, emb, f, answer, fresh_emb, f_fresh) -> float | None:
    """Fresh rho of the answer stated alone (partial's claim of exactly the answer, its better reading, h fitted
    on the fit half): what a minimal explanation reaches, beside what the chosen one reaches. None: no answer, one
    of several accepted values ("in the top row": three positions), or one partial has no claim for (a relation)."""
    from clipgpt_core.explainers.partial import claim_bank
    from clipgpt_core.explainers.problem import explainer_for
    from clipgpt_core.explainers.stats import spearman_columns
    if not answer or any(isinstance(v, (tuple, list)) and len(v) > 1 for v in answer.values()):
        return None
    claim = {k: v[0] if isinstance(v, (tuple, list)) else v for k, v in answer.items()}
    ex = explainer_for(bundle)
    bank = claim_bank(ex)
    if claim not in bank.claims:
        return None
    p = ex.problem(emb, f, 0, "auto")
    v = bank.vectors(p)[bank.claims.index(claim)]                                 # (readings, D)
    rho = spearman_columns(p.rf_fit, p.emb[p.fit] @ v.T)
    e = ex.evaluate(p, claim_text(claim), None, "partial", 0.0, 0.0, vector=v[int(np.argmax(rho))])
    return spearman_ties(f_fresh, e.predict(fresh_emb))


def minimal(text: str, answer: dict) -> bool:
    """The explanation states the answer and no attribute the function does not depend on."""
    return states_answer(text, answer) and set(stated_values(text)) <= set(answer)


def end_to_end(bundle, n: int, methods) -> dict:
    """Seconds for explain() on n PIL images (independent renderer), embedding included, default budget:
    what a user waits for. Function: has_red."""
    images, scenes = world_sample(n, seed=3_000_000, renderer=alt_render.redraw)
    f = PLANTED["has_red"].score(scenes, images)
    out = {"images": n, "function": "has_red", "threads": torch.get_num_threads(), "seconds": {}}
    for m in methods:
        t = time.time()
        best = explain(bundle, images, f, method=m, progress=False)[0]
        out["seconds"][m] = round(time.time() - t, 2)
        print(f"end to end, {n} images, {m}: {out['seconds'][m]} s ({best.text})", flush=True)
    return out


def summarise(rows):
    out = {}
    groups = {}
    for r in rows:
        key = r.get("family") or (("planted, single attribute" if r["single_attribute"] else "planted, two attributes")
                                   if r["kind"] == "planted" else "classifier logits")
        groups.setdefault((key, r["set"], r["method"]), []).append(r)
    for (key, s, m), rs in groups.items():
        out[f"{key} | {s} | {m}"] = {
            "n": len(rs), "recovery": _mean(r["recovered"] for r in rs),
            "spearman": float(np.mean([r["spearman"] for r in rs])),
            "render_auc": (float(np.mean([r["render_auc"] for r in rs])) if all("render_auc" in r for r in rs)
                           else None),
            "spearman_h": float(np.mean([r["spearman_h"] for r in rs])),
            "minimal": _mean(r["minimal"] for r in rs),
            "minimal_headline": _mean(r["minimal_headline"] for r in rs),
            "fresh_answer_alone": _mean(r["fresh_answer_alone"] for r in rs),
            "other_renderer_spearman_h": _mean(r["other_renderer_spearman_h"] for r in rs),
            "other_renderer_probe_spearman": _mean(r.get("other_renderer_probe_spearman") for r in rs),
            "fresh_spearman_h": float(np.mean([r["fresh_spearman_h"] for r in rs])),
            "fresh_probe_spearman": float(np.mean([r["fresh_probe_spearman"] for r in rs])),
            "fresh_claims_oracle": _mean(r.get("fresh_claims_oracle") for r in rs),
            "fresh_over_probe": float(np.mean([r["fresh_spearman_h"] for r in rs])
                                      / max(1e-6, np.mean([r["fresh_probe_spearman"] for r in rs]))),
            "learned_spearman": (float(np.mean([r["learned_spearman"] for r in rs]))
                                 if all(r.get("learned_spearman") is not None for r in rs) else None),
            "spearman_over_ceiling": float(np.mean([r["spearman"] / max(r["spearman_ceiling"], 1e-6) for r in rs])),
            "spearman_ceiling": float(np.mean([r["spearman_ceiling"] for r in rs])),
            "probe_spearman": float(np.mean([r["probe_spearman"] for r in rs])),
            "probe_spearman_h": float(np.mean([r["probe_spearman_h"] for r in rs])),
            "probe_fit_spearman": float(np.mean([r["probe_fit_spearman"] for r in rs])),
            "probe_fit_spearman_h": float(np.mean([r["probe_fit_spearman_h"] for r in rs])),
            "centred_share": float(np.mean([r["centred"] for r in rs])),
            "r2": float(np.mean([r["r2"] for r in rs])), "log_prior": float(np.mean([r["log_prior"] for r in rs])),
            "log_prior_answer": _mean(r["log_prior_answer"] for r in rs),
            "seconds": float(np.mean([r["seconds"] for r in rs]))}
    return out


def _mean(values) -> float:
    """The mean of the values that are not None (functions without a known answer have none); NaN if none are."""
    xs = [float(v) for v in values if v is not None]
    return float(np.mean(xs)) if xs else float("nan")


def print_table(summary):
    print(f"\n{'functions | images | method':58s} {'n':>3s} {'recov':>6s} {'minim':>6s} {'fresh':>6s} {'f.probe':>7s} {'oracle':>6s} {'rho':>6s} {'rho_h':>6s} {'rho/ceil':>8s} "
          f"{'probe':>6s} {'probe_h':>7s} {'fit_h':>6s} {'ceil':>5s} {'R2':>6s} {'log p':>6s} {'log p ans':>9s} {'s/expl':>6s} {'centred':>7s}")
    for k, v in summary.items():
        print(f"{k:58s} {v['n']:3d} {v['recovery']:6.2f} {v['minimal']:6.2f} {v['fresh_spearman_h']:6.3f} "
              f"{v['fresh_probe_spearman']:7.3f} {v['fresh_claims_oracle']:6.3f} {v['spearman']:6.3f} {v['spearman_h']:6.3f} "
              f"{v['spearman_over_ceiling']:8.3f} {v['probe_spearman']:6.3f} {v['probe_spearman_h']:7.3f} {v['probe_fit_spearman_h']:6.3f} {v['spearman_ceiling']:5.2f} {v['r2']:6.3f} "
              f"{v['log_prior']:6.1f} {v['log_prior_answer']:9.1f} {v['seconds']:6.1f} {v['centred_share']:7.2f}")


if __name__ == "__main__":
    main()
