"""The "Caption an image" tab: CLIP -> GPT captions, ranked, with CLIP similarities."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from clipgpt_core.images import load_image

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"
USER_ERRORS = (ValueError, RuntimeError, OSError)


def build(captioner) -> None:
    """Lay out the tab inside the current gr.Blocks / gr.Tab."""

    def caption(image, num_beams, num_samples, temperature, seed):
        if image is None:
            raise gr.Error("Upload an image or pick an example")
        try:
            ranked = captioner.candidates([load_image(image)], num_beams=int(num_beams), num_samples=int(num_samples),
                                          temperature=float(temperature), seed=int(seed or 0))[0]
        except USER_ERRORS as e:
            raise gr.Error(str(e)) from e
        best = ranked[0]   # candidates come ranked by score, as caption() chooses
        table = [[r["caption"], round(r["score"], 4), round(r["clip_similarity"], 4), round(r["log_prob"], 3)]
                 for r in ranked]
        return f"### {best['caption']}\n\n*{captioner.mode}*", table

    with gr.Row():
        with gr.Column(scale=2):
            image = gr.Image(label="Image", type="pil", image_mode="RGB", height=260)
            num_beams = gr.Slider(1, 10, value=5, step=1, label="Beams")
            num_samples = gr.Slider(0, 32, value=0, step=1, label="Extra sampled candidates")
            temperature = gr.Slider(0.1, 2, value=1.0, step=0.05, label="Sampling temperature")
            seed = gr.Number(value=0, precision=0, label="Seed")
            go = gr.Button("Caption", variant="primary")
        with gr.Column(scale=3):
            best = gr.Markdown()
            table = gr.Dataframe(headers=["caption", "score", "CLIP similarity", "log p per token"],
                                 label=f"Candidates, ranked by score = CLIP similarity + "
                                       f"{getattr(captioner, 'prior_weight', 0):g} × log p per token",
                                 wrap=True)
    inputs = [image, num_beams, num_samples, temperature, seed]
    go.click(caption, inputs, [best, table], api_name="caption")
    examples = sorted(EXAMPLES_DIR.glob("*.png"))
    if examples:
        gr.Examples([[str(p)] for p in examples], [image], label="World examples")
