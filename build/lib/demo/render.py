"""The "Render" tab: text (and learned tokens such as <concept>) -> images, a thin UI over
clipgpt_core.renderer.Renderer (a diffusers StableDiffusionPipeline)."""
from __future__ import annotations

import gradio as gr

from clipgpt_core.renderer import GUIDANCE, NUM_IMAGES, STEPS, RenderError
from demo import upscale

EXAMPLES = ["a large red circle on a black background", "a small blue star in the top left",
            "a yellow square on a gray background", "two green triangles on a white background"]
NO_RENDERER = ("This bundle has no renderer. Train one (about an hour on a 2-core CPU) with\n\n"
               "`python -m clipgpt_train.renderer --out BUNDLE/renderer`\n\n"
               "and add `\"renderer\": {\"kind\": \"diffusers_stable_diffusion\", \"path\": \"renderer\"}` to the "
               "bundle's manifest.json components; or start the app with an `open_clip:` bundle to drive "
               "Stable Diffusion 1.5 from the local Hugging Face cache.")


def bundle_renderer(bundle):
    """The bundle's renderer, loaded on first use; gr.Error saying how to get one, or why it failed."""
    if not bundle.has_renderer():
        raise gr.Error(NO_RENDERER)
    try:
        return bundle.renderer          # an absent pretrained model says so here
    except RenderError as e:
        raise gr.Error(str(e)) from e


def build(bundle) -> None:
    """Lay out the tab inside the current gr.Blocks / gr.Tab."""

    def renderer():
        return bundle_renderer(bundle)

    def render(prompt, negative_prompt="", guidance_scale=4.0, steps=20, seed=0, num_images=4,
               progress=gr.Progress(track_tqdm=True)):
        """Render images from a text prompt with the bundle's text-to-image model (a diffusion model
        conditioned on its CLIP text tower).

        Args:
            prompt: what to draw, e.g. "a large red circle on a black background"; learned tokens such as
                <concept> too, once loaded.
            negative_prompt: what to steer away from (optional).
            guidance_scale: classifier-free guidance, 0 to 30 (1 or less: no guidance).
            steps: denoising steps, 1 to 200.
            seed: random seed, 0 or more.
            num_images: how many images, 1 to 16.

        Returns:
            The rendered images.
        """
        r = renderer()
        seed = int(seed) if seed is not None else 0
        try:
            images = r.render([prompt or ""], num_images=int(num_images), guidance_scale=float(guidance_scale),
                              steps=int(steps), seed=seed, negative_prompt=negative_prompt or None)
        except RenderError as e:
            raise gr.Error(str(e)) from e
        return [(upscale(im, 256), f"seed {seed} · {i + 1}/{len(images)}") for i, im in enumerate(images)]

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
        except RenderError as e:
            if "already loaded" in str(e):     # harmless: say so and go on
                gr.Warning(str(e))
                return f"Loaded tokens: {', '.join(r.tokens)}"
            raise gr.Error(str(e)) from e
        return (f"Added {', '.join(added)}: use it in a prompt, e.g. “a {added[0]} on a black background”. "
                f"Loaded tokens: {', '.join(r.tokens)}")

    if not bundle.has_renderer():
        gr.Markdown(NO_RENDERER)
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", lines=2, placeholder="a large red circle on a black background — "
                                "learned tokens such as <concept> too, once loaded")
            negative = gr.Textbox(label="Negative prompt", placeholder="what to steer away from (optional)")
            guidance = gr.Slider(*GUIDANCE, value=4.0, step=0.5, label="Guidance scale (≤ 1: no guidance)")
            steps = gr.Slider(*STEPS, value=20, step=1, label="Steps")
            with gr.Row():
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                num_images = gr.Slider(*NUM_IMAGES, value=4, step=1, label="Images")
            go = gr.Button("Render", variant="primary")
            with gr.Accordion("Learned tokens", open=False):
                tokens_file = gr.File(label="Learned-token file (diffusers' learned_embeds.safetensors)",
                                      type="filepath")
                tokens_status = gr.Markdown()
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Renders", columns=4, height=420, object_fit="contain",
                                 elem_id="render-gallery")
    inputs = [prompt, negative, guidance, steps, seed, num_images]
    go.click(render, inputs, gallery, api_name="render", concurrency_limit=1, concurrency_id="renderer")
    prompt.submit(render, inputs, gallery, api_name="render_submit", concurrency_limit=1,
                  concurrency_id="renderer", api_visibility="undocumented")   # /render under another trigger
    tokens_file.upload(load_tokens, tokens_file, tokens_status, api_name="load_tokens", concurrency_limit=1,
                      concurrency_id="renderer")   # one pipeline: one job on it at a time
    gr.Examples([[e] for e in EXAMPLES], [prompt], label="Prompts")
