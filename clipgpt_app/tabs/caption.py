"""The "Caption an image" tab: CLIP -> GPT captions, ranked, with CLIP similarities."""
from __future__ import annotations

import gradio as gr

from clipgpt_core.bundle import captioner_choices
from clipgpt_core.paths import EXAMPLES
from clipgpt_core.errors import ClipGPTError
from clipgpt_core.images import load_image
from clipgpt_app.zerogpu import gpu
from clipgpt_app.uploads import ImageFile


def build(bundle) -> None:
    """Lay out the tab inside the current gr.Blocks / gr.Tab. The bundle's captioner is read at each event,
    so a bundle still loading (bundle.LoadingBundle) is waited for then, not here."""

    choices = captioner_choices(bundle.manifest)

    @gpu("caption")
    def caption(image, num_beams=5, num_samples=0, temperature=1.0, seed=0, top=10, model=""):
        """Caption an image: CLIP embeds it, a GPT decodes captions from the embedding, and the candidates
        are ranked by CLIP similarity plus the caption's log-probability.

        Args:
            image: the image file to caption (PNG, JPEG, WebP, ...).
            num_beams: beam-search width, 1 to 10; each beam gives one candidate caption.
            num_samples: extra sampled candidates, 0 to 32.
            temperature: sampling temperature for the extra candidates, 0.1 to 2.
            seed: random seed for the sampled candidates.
            top: how many candidates to return, best first, 1 to 100 (the best `top` of all of them).
            model: which of the bundle's captioners ("" = its default); a published bundle has ClipCap's COCO
                and Conceptual Captions models.

        Returns:
            The best caption (Markdown) and a table of candidates: caption, score, CLIP similarity,
            log-probability per token.
        """
        if image is None:
            raise gr.Error("Upload an image or pick an example")
        try:
            captioner = bundle.captioners.get(model) or bundle.captioner     # a bundle still loading is waited for
            ranked = captioner.candidates([load_image(image)], num_beams=int(num_beams), num_samples=int(num_samples),
                                          temperature=float(temperature), seed=int(seed or 0),
                                          top=max(1, min(100, int(top or 10))))[0]
        except ClipGPTError as e:       # bad uploads (BadImageError) and the like; anything else is a bug
            raise gr.Error(str(e)) from e
        best = ranked[0]   # candidates come ranked by score, as caption() chooses
        table = [[r["caption"], round(r["score"], 4), round(r["clip_similarity"], 4), round(r["log_prob"], 3)]
                 for r in ranked]
        similarity = "CLIP similarity (the mean of the bundle's CLIP and its ranking CLIP)" \
            if captioner.ranking_clips else "CLIP similarity"
        weight = f"score = {similarity} + {captioner.prior_weight:g} × log p per token"
        return f"### {best['caption']}\n\n*{captioner.mode}* · {weight}", table

    with gr.Row():
        with gr.Column(scale=2):
            image = ImageFile(label="Image", height=260, elem_id="caption-image")
            num_beams = gr.Slider(1, 10, value=5, step=1, label="Beams")
            num_samples = gr.Slider(0, 32, value=0, step=1, label="Extra sampled candidates")
            temperature = gr.Slider(0.1, 2, value=1.0, step=0.05, label="Sampling temperature")
            seed = gr.Number(value=0, precision=0, label="Seed")
            top = gr.Slider(1, 100, value=10, step=1, label="Candidates shown")
            model = gr.Dropdown(choices or [("default", "")], value=choices[0][1] if choices else "",
                                label="Captioner", visible=len(choices) > 1)
            go = gr.Button("Caption", variant="primary")
        with gr.Column(scale=3):
            best = gr.Markdown(elem_id="caption-best")
            table = gr.Dataframe(headers=["caption", "score", "CLIP similarity", "log p per token"],
                                 label="Best candidates, ranked by score (CLIP similarity + weight × log p per token)",
                                 wrap=True, elem_id="caption-table")
    inputs = [image, num_beams, num_samples, temperature, seed, top, model]
    go.click(caption, inputs, [best, table], api_name="caption")
    examples = sorted(EXAMPLES.glob("*.png"))
    if examples:   # cached on first click (not at launch, which they would slow): a click then shows at once
        gr.Examples([[str(p)] for p in examples], [image], [best, table], fn=caption, label="World examples",
                    cache_examples=True, cache_mode="lazy")
