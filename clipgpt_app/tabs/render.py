"""The "Render" tab: text (and learned tokens such as <concept>) or an image -> images, a thin UI over
clipgpt_core.models.renderer.Renderer (a diffusers pipeline), showing what it read and the layout it drew."""
from __future__ import annotations

import json

import gradio as gr

from clipgpt_core.errors import ClipGPTError
from clipgpt_core.images import load_image
from clipgpt_core.models.planner import draw_plan
from clipgpt_core.paths import BENCHMARK_RESULTS
from clipgpt_core.models.renderer import (DETAIL_DEFAULT, GUIDANCE, GUIDANCE_DEFAULT, NUM_IMAGES, PRIOR_TEMPERATURE,
                                         PRIOR_TEMPERATURE_DEFAULT, STEPS, STEPS_DEFAULT, RenderError,
                                         TokenAlreadyLoaded)
from clipgpt_app.zerogpu import gpu
from clipgpt_app.tabs import NO_RENDERER, bundle_renderer, gallery_file, upscale
from clipgpt_app.uploads import ImageFile

EXAMPLES = ["a large red star and a large blue circle on a black background", "a red star left of a blue circle",
            "three small yellow circles on a gray background",
            "a small green cross in the top right, a purple square and a large white triangle on a black background",
            "a large red circle on a black background"]
DIVERSITY_RESULTS = BENCHMARK_RESULTS / "render_diversity.json"


def diversity_figure():
    """The measured diversity-fidelity points as a table (route, guidance, fidelity, diversity), or None when this
    checkout has no result file (an installed package, a Space)."""
    import pandas as pd
    try:
        routes = json.loads(DIVERSITY_RESULTS.read_text())["routes"]
    except (OSError, ValueError, KeyError):
        return None
    return pd.DataFrame([{"route": name} | row for name, rows in routes.items() for row in rows])


def build(bundle) -> None:
    """Lay out the tab inside the current gr.Blocks / gr.Tab."""
    from clipgpt_core.models.fast_sd import defaults      # a few-step renderer (manifest "fast"): 4 steps, no CFG
    steps_default, guidance_default = defaults(bundle.manifest) or (STEPS_DEFAULT, GUIDANCE_DEFAULT)

    def renderer():
        return bundle_renderer(bundle)

    def show(images, plans, seed, source: str = ""):
        """Renders, what was read, and the layout drawn for each image."""
        renders = [(upscale(im, 256), f"seed {seed} · {i + 1}/{len(images)}") for i, im in enumerate(images)]
        layouts = [(gallery_file(draw_plan(p, im)),
                    ", ".join(f"{b['colour']} {b['shape']}" for b in p.boxes()) or "no layout")
                   for p, im in zip(plans, images)]
        lines = [source] if source else []
        for reading in dict.fromkeys(p.reading for p in plans):
            lines.append(f"**{reading.text}** — {reading.summary()}")
        lines += [f"⚠ {n}" for n in dict.fromkeys(p.note for p in plans if p.note)]
        return renders, "\n\n".join(lines), layouts

    @gpu("render")
    def render(prompt, negative_prompt="", guidance_scale=guidance_default, steps=steps_default, seed=0,
               num_images=4, via_prior=False, detail=DETAIL_DEFAULT, progress=gr.Progress(track_tqdm=True)):
        """Render images from a text prompt with the bundle's text-to-image model: the prompt is read in the world's
        caption language, a layout is planned (boxes for every object it states), and a diffusion model
        conditioned on the text and the layout draws it.

        Args:
            prompt: what to draw, e.g. "a red star left of a blue circle"; learned tokens (<concept>) once loaded.
            negative_prompt: what to steer away from (optional).
            guidance_scale: classifier-free guidance, 0 to 30 (1 or less: no guidance).
            steps: denoising steps, 1 to 200.
            seed: random seed, 0 or more; it also picks whatever the prompt leaves unstated.
            num_images: how many images, 1 to 16.
            via_prior: draw what the caption->CLIP prior's image embedding of the text says (DALL-E 2's path).
            detail: the detail pass: each small object also drawn large, alone, and scaled down into its place.

        Returns:
            The rendered images, what was read of the prompt, and the layout drawn for each image.
        """
        r = renderer()
        seed = int(seed) if seed is not None else 0
        try:
            images, plans = r.render_with_plans([prompt or ""], num_images=int(num_images),
                                                guidance_scale=float(guidance_scale), steps=int(steps), seed=seed,
                                                negative_prompt=negative_prompt or None, via_prior=bool(via_prior),
                                                detail=bool(detail))
        except RenderError as e:
            raise gr.Error(str(e)) from e
        return show(images, plans, seed, "Via the prior: the text's predicted CLIP image embedding, read back as"
                    if via_prior else "")

    @gpu("render")
    def variations(image, num_images=4, seed=0, guidance_scale=guidance_default, steps=steps_default,
                   detail=DETAIL_DEFAULT, progress=gr.Progress(track_tqdm=True)):
        """Variations of an image (seed 003's unCLIP): its CLIP image embedding is read into the world's language
        and drawn again, keeping every object's colour and shape and the background, with a new layout.

        Args:
            image: the image (any format and mode).
            num_images: how many variations, 1 to 16.
            seed: random seed, 0 or more.
            guidance_scale: classifier-free guidance, 0 to 30.
            steps: denoising steps, 1 to 200.
            detail: the detail pass: each small object also drawn large, alone, and scaled down into its place.

        Returns:
            The variations, what the embedding was read as, and the layout drawn for each.
        """
        if not image:
            raise gr.Error("Upload an image to make variations of")
        r = renderer()
        seed = int(seed) if seed is not None else 0
        try:
            images, plans = r.variations_with_plans([load_image(image)], num_images=int(num_images), seed=seed,
                                                    guidance_scale=float(guidance_scale), steps=int(steps),
                                                    detail=bool(detail))
        except ClipGPTError as e:
            raise gr.Error(str(e)) from e
        return show(images, plans, seed, "The image's CLIP embedding, read as")

    def image_vector(image, name: str):
        if not image:
            raise gr.Error(f"Upload {name}")
        return bundle.clip.encode_images([load_image(image)])[0]

    def strip(images, note: str):
        return [(upscale(im, 256), label) for im, label in images], note, []

    @gpu("render")
    def decode_image(image, num_images=4, seed=0, progress=gr.Progress(track_tqdm=True)):
        """Draw an image's CLIP image vector itself (seed 003's unCLIP decoder, no caption in between): the vector is
        read as a scene per 3x3 cell and background, and drawn num_images times with different noise.

        Args:
            image: the image whose CLIP vector to draw.
            num_images: how many images, 1 to 16.
            seed: random seed, 0 or more.

        Returns:
            The decoded images and a note.
        """
        try:
            images = renderer().decode(image_vector(image, "an image"), num_images=int(num_images),
                                       seed=int(seed or 0))
        except ClipGPTError as e:
            raise gr.Error(str(e)) from e
        return strip([(im, f"seed {seed} · {i + 1}/{len(images)}") for i, im in enumerate(images)],
                     "The image's CLIP vector, decoded (unCLIP: no caption in between)")

    @gpu("render")
    def interpolate(image_a, image_b, frames=5, seed=0, progress=gr.Progress(track_tqdm=True)):
        """Interpolate between two images (seed 003): their CLIP image vectors slerped in `frames` steps, each
        decoded with the same noise, so the strip shows what moving through CLIP's space changes.

        Args:
            image_a: the first image.
            image_b: the last image.
            frames: how many frames, 2 to 16.
            seed: the noise, fixed across the strip.

        Returns:
            The strip of frames and a note.
        """
        try:
            images = renderer().interpolate(image_vector(image_a, "image A"), image_vector(image_b, "image B"),
                                            int(frames), int(seed or 0))
        except ClipGPTError as e:
            raise gr.Error(str(e)) from e
        return strip([(im, f"t = {i / (len(images) - 1):.2f}") for i, im in enumerate(images)],
                     "slerp(z_A, z_B, t), decoded with fixed noise")

    @gpu("render")
    def text_diff(image, from_text, to_text, seed=0, progress=gr.Progress(track_tqdm=True)):
        """Apply a text diff to an image (DALL-E 2): its CLIP vector moved towards CLIP(to) - CLIP(from), e.g.
        "a red star" -> "a blue star", at amounts 0, 0.25, 0.5 and 0.75, each decoded with the same noise.

        Args:
            image: the image to change.
            from_text: what the image is (or holds), e.g. "a red star".
            to_text: what it should become, e.g. "a blue star".
            seed: the noise, fixed across the strip.

        Returns:
            The strip of images, one per amount, and a note.
        """
        thetas = (0.0, 0.25, 0.5, 0.75)
        try:
            images = renderer().text_diff(image_vector(image, "an image"), from_text or "", to_text or "", thetas,
                                          int(seed or 0))
        except ClipGPTError as e:
            raise gr.Error(str(e)) from e
        return strip([(im, f"θ = {t:g}") for im, t in zip(images, thetas)],
                     f"slerp(z_image, normalize(z(“{to_text}”) − z(“{from_text}”)), θ), decoded with fixed noise")

    @gpu("render")
    def sample_prior(prompt, num_images=4, seed=0, guidance_scale=guidance_default,
                     temperature=PRIOR_TEMPERATURE_DEFAULT, progress=gr.Progress(track_tqdm=True)):
        """Render a prompt through a sampling prior (seed 003, DALL-E 2's whole path): num_images CLIP image vectors
        drawn from the caption->CLIP prior (its mean plus a Gaussian residual of what captions leave out), each
        decoded. Beside Render (text conditioning), it shows what varies when the vector is sampled.

        Args:
            prompt: what to draw, e.g. "a red star and a blue circle".
            num_images: how many vectors (and images), 1 to 16.
            seed: random seed, 0 or more (the vectors and the noise).
            guidance_scale: the decoder's classifier-free guidance, 0 to 30.
            temperature: the residual's scale, 0 (the mean only) to 4.

        Returns:
            The images, one per sampled vector, and a note.
        """
        try:
            images = renderer().sample_via_prior([prompt or ""], int(num_images), int(seed or 0), float(temperature),
                                                 guidance_scale=float(guidance_scale))
        except ClipGPTError as e:
            raise gr.Error(str(e)) from e
        return strip([(im, f"vector {i + 1}/{len(images)}") for i, im in enumerate(images)],
                     f"“{prompt}” → {len(images)} vectors sampled from the prior (temperature {temperature:g}), decoded")

    def load_tokens(path):
        """Load learned tokens (diffusers' learned_embeds.safetensors, e.g. from Explain's textual inversion)
        into the renderer, so prompts can use them, e.g. "a <concept> on a black background".

        Args:
            path: the learned-token file.

        Returns:
            A status line naming the tokens now loaded.
        """
        if not path:
            raise gr.Error("Choose a learned-token file (learned_embeds.safetensors)")
        r = renderer()
        try:
            added = r.load_tokens(path)
        except TokenAlreadyLoaded as e:
            gr.Warning(str(e))
            return f"Loaded tokens: {', '.join(r.tokens)}"
        except RenderError as e:
            raise gr.Error(str(e)) from e
        return (f"Added {', '.join(added)}: use it in a prompt, e.g. “a {added[0]} on a black background”. "
                f"Loaded tokens: {', '.join(r.tokens)}")

    if not bundle.has_renderer():
        gr.Markdown(NO_RENDERER)
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", lines=2, placeholder="a red star left of a blue circle on a black "
                                "background — learned tokens such as <concept> too, once loaded")
            negative = gr.Textbox("", label="Negative prompt", placeholder="what to steer away from (optional)")
            via_prior = gr.Checkbox(False, label="Via the prior (text → CLIP image embedding → image, as DALL-E 2)")
            guidance = gr.Slider(*GUIDANCE, value=guidance_default, step=0.5, label="Guidance scale (≤ 1: no guidance)")
            steps = gr.Slider(*STEPS, value=steps_default, step=1, label="Steps")
            detail = gr.Checkbox(DETAIL_DEFAULT, label="Detail pass (small objects drawn large, then scaled into place)")
            with gr.Row():
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                num_images = gr.Slider(*NUM_IMAGES, value=4, step=1, label="Images")
            go = gr.Button("Render", variant="primary")
            with gr.Accordion("Image as prompt: variations", open=False):
                source = ImageFile(label="Image", sources=["upload", "clipboard"], height=160)
                vary = gr.Button("Variations")
            with gr.Accordion("Draw CLIP vectors (unCLIP): decode, interpolate, text diffs", open=False):
                with gr.Row():
                    vec_a = ImageFile(label="Image A", sources=["upload", "clipboard"], height=140)
                    vec_b = ImageFile(label="Image B (interpolation)", sources=["upload", "clipboard"], height=140)
                frames = gr.Slider(2, 16, value=5, step=1, label="Frames (interpolation)")
                with gr.Row():
                    diff_from = gr.Textbox("", label="Text diff: from", placeholder="a red star")
                    diff_to = gr.Textbox("", label="to", placeholder="a blue star")
                with gr.Row():
                    decode_btn = gr.Button("Decode A")
                    interpolate_btn = gr.Button("Interpolate A → B")
                    diff_btn = gr.Button("Apply text diff to A")
            with gr.Accordion("Experiments: diversity against fidelity (a sampling prior)", open=False):
                temperature = gr.Slider(*PRIOR_TEMPERATURE, value=PRIOR_TEMPERATURE_DEFAULT, step=0.25,
                                        label="Prior temperature (0: its mean only)")
                sample_btn = gr.Button("Sample the prompt via the prior")
                measured = diversity_figure()
                if measured is not None:
                    gr.ScatterPlot(measured, x="fidelity", y="diversity", color="route", title=(
                        "Measured (benchmarks/results/render_diversity.json): guidance 1-10 per route"),
                        tooltip=["route", "guidance", "fidelity", "diversity"], height=260)
            with gr.Accordion("Learned tokens", open=False):
                tokens_file = gr.File(label="Learned-token file (diffusers' learned_embeds.safetensors)",
                                      type="filepath")
                tokens_status = gr.Markdown()
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Renders", columns=4, height=300, object_fit="contain",
                                 elem_id="render-gallery")
            reading = gr.Markdown(elem_id="render-reading")
            layouts = gr.Gallery(label="Layout drawn (boxes the planner gave each object)", columns=4, height=300,
                                 object_fit="contain", elem_id="render-layouts")
    inputs = [prompt, negative, guidance, steps, seed, num_images, via_prior, detail]
    outputs = [gallery, reading, layouts]
    go.click(render, inputs, outputs, api_name="render", concurrency_limit=1, concurrency_id="renderer")
    prompt.submit(render, inputs, outputs, api_name="render_submit", concurrency_limit=1,
                  concurrency_id="renderer", api_visibility="undocumented")   # /render under another trigger
    vary.click(variations, [source, num_images, seed, guidance, steps, detail], outputs, api_name="render_variations",
               concurrency_limit=1, concurrency_id="renderer")
    decode_btn.click(decode_image, [vec_a, num_images, seed], outputs, api_name="render_decode", concurrency_limit=1,
                     concurrency_id="renderer")
    interpolate_btn.click(interpolate, [vec_a, vec_b, frames, seed], outputs, api_name="render_interpolate",
                          concurrency_limit=1, concurrency_id="renderer")
    diff_btn.click(text_diff, [vec_a, diff_from, diff_to, seed], outputs, api_name="render_text_diff",
                   concurrency_limit=1, concurrency_id="renderer")
    sample_btn.click(sample_prior, [prompt, num_images, seed, guidance, temperature], outputs,
                     api_name="render_sample_prior", concurrency_limit=1, concurrency_id="renderer")
    tokens_file.upload(load_tokens, tokens_file, tokens_status, api_name="load_tokens", concurrency_limit=1,
                      concurrency_id="renderer")   # one pipeline: one job on it at a time
    gr.Examples([[e] for e in EXAMPLES], [prompt], label="Prompts")
