"""The "Explain" tab: find text (or learned tokens) t and a monotone h with f(image) ~= h(CLIP_t(image)),
a thin UI over clipgpt_core.explainers and clipgpt_core.explainers.targets."""
from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from clipgpt_core import explainers          # its methods import torch and the models on first use
from clipgpt_core.access import ServerFiles
from clipgpt_core.errors import ClipGPTError
from clipgpt_core.explainers.defaults import DEFAULT_BUDGET, DEFAULT_PRIOR_WEIGHT, LAYER_COLUMNS
from clipgpt_core.explainers.errors import TargetError
from clipgpt_core.explainers.inputs import IMAGE_SOURCES, KINDS, ExplainInputs
from clipgpt_core.explainers.planted import PLANTED
from clipgpt_core.explainers.scores import check_scores, images_in
from clipgpt_core.explainers.targets import ClassifierTarget
from clipgpt_core.images import load_image
from clipgpt_core.models.classifier_files import classifier_outputs
from clipgpt_core.models.renderer import RenderError
from clipgpt_core.world.captions import states_answer
from clipgpt_app.zerogpu import gpu
from clipgpt_app.tabs import bundle_renderer, upscale

TARGETS = list(KINDS)                          # the radio shows the user's words; the core reads them
SOURCES = list(IMAGE_SOURCES)
METHOD_NAMES = {"partial": "partial descriptions (+ compositions)", "search": "prior-guided search", "dissect": "CLIP-Dissect baseline (SoftWPMI)",
                "inversion": "textual inversion", "gumbel": "Gumbel-softmax over the prior",
                "rl": "RL: the prior fine-tuned as the policy"}
USER_ERRORS = (ClipGPTError, OSError)   # project errors and unreadable files are messages; the rest are bugs
CENTRE = {"auto": "auto", "centred": True, "raw cosine": False}   # the radio's choices -> explain(centre=...)
HEADERS = ["explanation", "held-out ρ(f, h(CLIP_t))", "held-out ρ(f, CLIP_t)", "held-out R²",
           "ridge probe ρ (same labels)", "prior log p", "method"]
APPLY_HEADERS = ["image", "CLIP_t", "predicted f"]
# the classifier layers the layer job offers: its logits (both heads), its penultimate units, the last conv block
LAYERS = {"logits (shape and colour heads)": "", "penultimate units": "penultimate", "last conv block": "body.3"}


def written_here(path: str) -> None:
    """A saved explanation names its learned-token file; the render button loads it only where this app's
    explainers write them (a temporary clipgpt-explain-* folder), so an uploaded explanation cannot make a
    shared app read any other server file."""
    resolved = Path(path).resolve()
    if not (resolved.is_relative_to(Path(tempfile.gettempdir()).resolve())
            and any(part.startswith("clipgpt-explain-") for part in resolved.parts)):
        raise TargetError("This explanation's learned tokens were not written by this app; load them in the Render "
                          "tab (Learned tokens) instead")


def preview(image, size: int = 128):
    """A gallery thumbnail; an image known only by its path (an embeddings folder's row) is read now, and
    one that is gone shows as gray rather than failing the whole answer."""
    if isinstance(image, str):
        try:
            image = load_image(image)
        except ClipGPTError:
            image = Image.new("RGB", (64, 64), (128, 128, 128))
    return upscale(image, size)


def build(bundle, files: ServerFiles = ServerFiles()) -> None:
    """Lay out the tab inside the current gr.Blocks / gr.Tab. `files`: which server folders typed paths
    (and the paths in a CSV) may name."""
    asks = ExplainInputs(bundle, files)        # the function to explain and its images
    shapes_world = bundle.is_shapes_world

    @gpu("explain")
    def explain(target_kind=TARGETS[0], planted="has_red", clf_output=None, csv_file=None, pos_folder="", neg_folder="",
                pos_files=None, neg_files=None, image_source=SOURCES[0], n_images=512, image_folder="", method=None,
                budget=0, prior_weight=DEFAULT_PRIOR_WEIGHT, seed=0, centre="auto", embeddings_folder="",
                progress=gr.Progress(track_tqdm=True)):
        """Find text t and a monotone h with f(image) ~= h(CLIP_t(image)) for a function f of images.

        Args:
            target_kind: what f is: "Planted function", "Classifier output", "My scores (CSV)" or "Positives vs negatives".
            planted: the planted function's name (target_kind "Planted function").
            clf_output: the shipped classifier's output to explain (target_kind "Classifier output").
            csv_file: a CSV of image paths and scores (target_kind "My scores (CSV)").
            pos_folder: a folder of positive images (target_kind "Positives vs negatives").
            neg_folder: a folder of negative images (target_kind "Positives vs negatives").
            pos_files: uploaded positive images, instead of pos_folder.
            neg_files: uploaded negative images, instead of neg_folder.
            image_source: the images f is read on: "Built-in gallery sample" or "My images (folder)".
            n_images: how many gallery images to use.
            image_folder: the folder, when image_source is "My images (folder)".
            method: partial, search, dissect, inversion, gumbel or rl (empty: the bundle's default).
            budget: the method's search budget (empty: its default).
            prior_weight: weight of the caption prior's log p in the score.
            seed: splits the images into fit and held-out halves.
            centre: "auto", "centred" or "raw cosine".
            embeddings_folder: with a CSV, the embeddings folder `clip-retrieval inference` wrote for its images
                (img_emb/ + metadata/, this bundle's CLIP); then no image is read but the 16 shown.
        """
        method = method or explainers.default_method(bundle)       # the same default as explain() and the CLI
        try:
            images, emb, f, answer = asks.function(
                target_kind, planted=planted, output=clf_output, csv_file=csv_file, embeddings_folder=embeddings_folder,
                positives=pos_files or pos_folder, negatives=neg_files or neg_folder, image_source=image_source,
                n_images=n_images, image_folder=image_folder)
            if emb is None:
                check_scores(f, len(images))
                emb = bundle.clip.encode_images(images)
            budget = int(budget) if budget else None
            ranked = explainers.explain(bundle, emb, f, method=method, budget=budget, prior_weight=float(prior_weight),
                             seed=int(seed or 0), centre=CENTRE.get(centre, "auto"))
            if not ranked:
                raise TargetError("No explanation came out; raise the budget")
            best = ranked[0]
            centred = best.extra["centred"]                   # what "auto" chose
            x, fh, hh, held = explainers.fit_curve(bundle, emb, f, best, seed=int(seed or 0), centre=centred)
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from e
        table = [e.row() for e in ranked]
        order = np.argsort(x)
        plot = pd.DataFrame({"CLIP_t": np.r_[x, x[order]], "score": np.r_[fh, hh[order]],
                             "series": ["f (held-out images)"] * len(x) + ["h(CLIP_t), fitted on the other half"] * len(x)})
        xs = best.clip_t(emb)
        top = np.argsort(-f, kind="stable")[:8]
        bottom = np.argsort(f, kind="stable")[:8]
        gal = lambda idx: [(preview(images[i]), f"f={f[i]:.3g} · CLIP_t={xs[i]:.3f}") for i in idx]  # noqa: E731
        probe = best.probe_spearman
        status = (f"**{best.text}** — held-out ρ(f, h(CLIP_t)) {best.spearman_h:.3f} (ties allowed; the ridge probe "
                  f"fitted on the same labels reads {probe:.3f}), ρ(f, CLIP_t) {best.spearman:.3f} (the most a "
                  f"tie-free score could reach: {best.extra.get('spearman_ceiling', 1):.2f}), R² {best.r2:.3f}, "
                  f"log p {best.log_prior:.1f}; h {best.direction}; CLIP_t {'centred' if centred else 'raw cosine'}; "
                  f"{len(f)} images, {best.seconds:.1f} s ({METHOD_NAMES[method]}).")
        if best.terms:
            status += "\n\nA composition of " + ", ".join(
                f"{'−' if t['sign'] < 0 else '+'}{t['weight']:.2f} × “{t['text']}”" for t in best.terms) + \
                " (z-scored CLIP_t's), chosen because it beat every single description on the fit half."
        if answer:
            ok = states_answer(best.text, answer)
            status += f"\n\nKnown answer {answer}: {'recovered ✓' if ok else 'not recovered ✗'}."
        if best.token_file:
            status += (f"\n\nLearned tokens {best.token} (held-out ρ {best.learned_spearman:.3f}) are in the file below "
                       f"(diffusers' learned_embeds.safetensors); “Render” draws them.")
        saved = best.save(Path(tempfile.mkdtemp(prefix="clipgpt-explanation-")) / "explanation.json")
        return table, status, plot, gal(top), gal(bottom), best.token_file, str(saved)

    @gpu("quick")
    def explain_apply(saved_file, folder="", uploads=None, progress=gr.Progress(track_tqdm=True)):
        """A saved explanation's h(CLIP_t) on a folder of images (or uploads) it never saw.

        Args:
            saved_file: the explanation's .json, as the Explain button offers it.
            folder: a folder of images on the server.
            uploads: image files, instead of the folder.
        """
        try:
            if not saved_file:
                raise TargetError("Upload a saved explanation (the .json the Explain button offers)")
            e = explainers.Explanation.load(saved_file, bundle)
            given = uploads or (folder or "").strip()
            if not given:
                raise TargetError("Type a folder of images, or upload some")
            paths = images_in(given, "Images", files)   # typed folders are checked against `files`
            images = [load_image(p) for p in paths]
            x = e.clip_t(images)
            pred = e.h(x)
        except USER_ERRORS as err:
            raise gr.Error(str(err)) from err
        order = np.argsort(-pred, kind="stable")
        table = [[Path(paths[i]).name, round(float(x[i]), 4), round(float(pred[i]), 4)] for i in order]
        gallery = [(upscale(images[i], 128), f"h(CLIP_t)={pred[i]:.3g}") for i in order[:8]]
        return table, gallery, (f"**{e.text}** applied to {len(images)} images (fitted on other images; held-out "
                                f"ρ(f, h(CLIP_t)) there {e.spearman_h:.3f}). Highest predicted f first.")

    @gpu("layer")
    def explain_layer(layer_name=list(LAYERS)[0], n_layer_images=512, progress=gr.Progress(track_tqdm=True)):
        """Explain every unit (or logit) of a layer of the built-in classifier at once, as CLIP-Dissect labels a layer.

        Args:
            layer_name: "logits (shape and colour heads)", "penultimate units" or "last conv block".
            n_layer_images: how many gallery images to read the units on.
        """
        try:
            images, emb, acts, names = asks.layer(LAYERS.get(layer_name, ""), n_layer_images)
            result = explainers.explain_layer(bundle, emb, acts, names)
        except USER_ERRORS as err:
            raise gr.Error(str(err)) from err
        out = Path(tempfile.mkdtemp(prefix="clipgpt-layer-"))
        df = result.to_dataframe()
        return (df, [str(result.to_csv(out / "layer.csv")), str(result.to_json(out / "layer.json"))],
                f"{len(df)} units of “{layer_name}” on {len(images)} images in {result.seconds:.1f} s "
                f"(images embedded once). Click a column to sort.")

    @gpu("layer")
    def explain_units(model_file, model_layer="", model_units="", pool="mean", n_layer_images=512, model_folder="",
                  progress=gr.Progress(track_tqdm=True)):
        """Explain units of your own vision model, read through a forward hook, on the gallery sample or a folder.

        Args:
            model_file: a torch.export program (.pt2; its layers keep their names) or a TorchScript file (its output only).
            model_layer: the layer, a name in model.named_modules() (empty: the model's output).
            model_units: unit indices such as "0,5,7" (empty: every unit of the layer).
            pool: how a conv channel is pooled over space: "mean" or "max".
            n_layer_images: how many gallery images to read the units on.
            model_folder: a folder of images to use instead of the gallery sample.
        """
        try:
            result = asks.units(model_file, model_layer, model_units, pool, n_layer_images, model_folder)
        except USER_ERRORS as err:
            raise gr.Error(str(err)) from err
        out = Path(tempfile.mkdtemp(prefix="clipgpt-units-"))
        df = result.to_dataframe()
        return (df, [str(result.to_csv(out / "units.csv")), str(result.to_json(out / "units.json"))],
                f"{len(df)} units of “{model_layer or 'the output'}” ({pool}-pooled) in {result.seconds:.1f} s.")

    @gpu("render")
    def render(saved_file, target_kind, clf_output, progress=gr.Progress(track_tqdm=True)):
        """Render the best explanation (the file the Explain button wrote); for a classifier output, also score
        the renders with it (the render check)."""
        if not saved_file:
            raise gr.Error("Explain something first")
        try:
            best = explainers.Explanation.load(saved_file)
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from e
        if not bundle.has_renderer():
            return [], ("This bundle has no renderer (the Render tab says how to add one); the explanation is: "
                        f"**{best.text}**")
        r = bundle_renderer(bundle)
        # a function of pixels can be checked on renders of its explanation
        output = clf_output if KINDS.get(target_kind, target_kind) == "classifier" else None
        try:
            prompt = best.render_text
            if best.token_file:
                written_here(best.token_file)
                if best.token not in r.tokens:
                    r.load_tokens(best.token_file)
                prompt = best.token
            if output:
                check = explainers.render_check(bundle, ClassifierTarget(asks.classifier(), output), prompt, n=8)
                return ([(upscale(im, 192), f"f = {v:.2f}") for im, v in zip(check.images, check.f_prompt)],
                        check.summary() + f" ({output}; contrast: random world captions)")
            images = r.render([prompt], num_images=4, seed=0)
        except (RenderError, *USER_ERRORS) as e:
            raise gr.Error(str(e)) from e
        return [(upscale(im, 192), prompt) for im in images], f"Rendered “{prompt}”."

    planted_choices = [(f"{p.description}  →  {p.answer}", k) for k, p in PLANTED.items()]
    clf_choices = classifier_outputs(bundle)
    with gr.Row():
        with gr.Column(scale=2):
            target_kind = gr.Radio(TARGETS, value=TARGETS[0], label="Function to explain")
            planted = gr.Dropdown(planted_choices, value="has_red", label="Planted function (known answer)")
            clf_output = gr.Dropdown(clf_choices, value=clf_choices[0] if clf_choices else None,
                                     label="Classifier output (logit or penultimate unit)")
            with gr.Accordion("My scores", open=False):
                csv_file = gr.File(label="CSV: image path, score", file_types=[".csv"], type="filepath")
                embeddings_folder = gr.Textbox("", label="…and its embeddings folder (optional)",
                                               info="what `clip-retrieval inference` or `clipgpt index` wrote for "
                                                    "those images with this bundle's CLIP: then no image is re-read")
                pos_folder = gr.Textbox("", label="Folder of positives")
                neg_folder = gr.Textbox("", label="Folder of negatives")
                pos_files = gr.File(label="…or positive images", file_count="multiple", type="filepath")
                neg_files = gr.File(label="…or negative images", file_count="multiple", type="filepath")
            image_source = gr.Radio(SOURCES, value=SOURCES[0] if shapes_world else SOURCES[1],
                                    label="Images (for planted functions and the classifier)")
            n_images = gr.Slider(16, 2048, value=512, step=16, label="Gallery sample size")
            image_folder = gr.Textbox("", label="Folder of my images")
            method = gr.Dropdown([(v, k) for k, v in METHOD_NAMES.items()], value=explainers.default_method(bundle),
                                 label="Method", info="partial: the fewest ShapesWorld attributes that explain f "
                                 "(“red”, “two stars”, “a red star”), or “A or B” / “A but not B” when that fits "
                                 "clearly better")
            budget = gr.Number(value=0, precision=0, minimum=0, label="Budget (0 = default)",
                               info="search: rounds ({search}); inversion / gumbel / rl: optimisation steps "
                                    "({inversion} / {gumbel} / {rl}); partial, dissect: none".format(**DEFAULT_BUDGET))
            prior_weight = gr.Slider(0, 0.1, value=DEFAULT_PRIOR_WEIGHT, step=0.005,
                                     label="Prior weight (× log p of the text, against Spearman ρ)")
            seed = gr.Number(value=0, precision=0, label="Seed (fit / held-out split and sampling)")
            centre = gr.Radio(list(CENTRE), value="auto", label="CLIP_t",
                              info="centred: cos(image, text) − cos(image, the concept list's mean text); raw "
                                   "cosine also tracks how crowded an image is (it fits some classifier logits "
                                   "better); auto: whichever lets the best concept fit the fit half better")
            go = gr.Button("Explain", variant="primary")
        with gr.Column(scale=3):
            status = gr.Markdown()
            table = gr.Dataframe(headers=HEADERS, label="Explanations, best first", wrap=True)
            plot = gr.ScatterPlot(x="CLIP_t", y="score", color="series", label="f against h(CLIP_t)",
                                  height=300)
            top = gr.Gallery(label="Highest f", columns=8, height=170)
            bottom = gr.Gallery(label="Lowest f", columns=8, height=170)
            with gr.Row():
                render_btn = gr.Button("Render the best explanation (and, for a classifier output, check f on the renders)")
                token_file = gr.File(label="Learned tokens (inversion)", interactive=False)
                explanation_file = gr.File(label="The best explanation (apply it to other images below)",
                                           interactive=False)
            renders = gr.Gallery(label="Renders", columns=4, height=220)
            render_status = gr.Markdown()
    with gr.Accordion("Apply a saved explanation to new images", open=False):
        gr.Markdown("An explanation is a predictor: h(CLIP_t(image)) on images it never saw.")
        with gr.Row():
            saved_file = gr.File(label="Saved explanation (.json)", file_types=[".json"], type="filepath")
            apply_folder = gr.Textbox("", label="Folder of images (on the server)")
            apply_files = gr.File(label="…or images", file_count="multiple", type="filepath")
        apply_btn = gr.Button("Apply")
        apply_status = gr.Markdown()
        apply_table = gr.Dataframe(headers=APPLY_HEADERS, label="Predictions, highest first")
        apply_gallery = gr.Gallery(label="Highest predicted f", columns=8, height=170)
    with gr.Accordion("Explain a whole layer: the classifier's, or your own model's", open=False):
        gr.Markdown("Every unit (or logit) at once, as CLIP-Dissect labels a layer: the images are embedded once and "
                    "each unit gets the partial description that fits it best, with the same held-out figures.")
        with gr.Row():
            layer_name = gr.Dropdown(list(LAYERS), value=list(LAYERS)[0], label="Layer")
            n_layer_images = gr.Slider(64, 2048, value=512, step=64, label="Gallery sample size")
            layer_btn = gr.Button("Explain the layer", variant="primary")
            layer_stop = gr.Button("Cancel")
        with gr.Row():
            # no file_types: an agent's upload arrives without its name; load_vision_model reads the content
            model_file = gr.File(label="…or your model (.pt2 from torch.export, or TorchScript)", type="filepath")
            model_layer = gr.Textbox("", label="Layer (its name in model.named_modules(); empty: the output)")
            model_units = gr.Textbox("", label="Units (e.g. 0,5,7; empty: all)")
            pool = gr.Radio(["mean", "max"], value="mean", label="Pool a conv channel over space by its")
            model_folder = gr.Textbox("", label="Folder of images (empty: the gallery sample)")
            units_btn = gr.Button("Explain my model's units", variant="primary")
        layer_status = gr.Markdown()
        layer_table = gr.Dataframe(headers=LAYER_COLUMNS, label="One row per unit (click a header to sort)")
        layer_files = gr.File(label="Download (CSV, JSON)", file_count="multiple", interactive=False)
    inputs = [target_kind, planted, clf_output, csv_file, pos_folder, neg_folder, pos_files, neg_files, image_source,
              n_images, image_folder, method, budget, prior_weight, seed, centre, embeddings_folder]
    go.click(explain, inputs, [table, status, plot, top, bottom, token_file, explanation_file], api_name="explain",
             concurrency_limit=1, concurrency_id="explain")
    apply_btn.click(explain_apply, [saved_file, apply_folder, apply_files], [apply_table, apply_gallery, apply_status],
                    api_name="explain_apply", concurrency_limit=1, concurrency_id="explain")
    job = layer_btn.click(explain_layer, [layer_name, n_layer_images], [layer_table, layer_files, layer_status],
                          api_name="explain_layer", concurrency_limit=1, concurrency_id="explain")
    units_job = units_btn.click(explain_units, [model_file, model_layer, model_units, pool, n_layer_images, model_folder],
                                [layer_table, layer_files, layer_status], api_name="explain_units",
                                concurrency_limit=1, concurrency_id="explain")
    layer_stop.click(None, None, None, cancels=[job, units_job])
    render_btn.click(render, [explanation_file, target_kind, clf_output], [renders, render_status], api_name="explain_render",
                     concurrency_limit=1,
                     concurrency_id="renderer", api_visibility="undocumented")   # the tab's button: not a tool

