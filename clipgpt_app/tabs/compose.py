"""The "Compose" tab: images and words interleaved into CLIP-GPT (seed 002); it writes a text, or a CLIP image
vector that is searched in the built-in gallery and drawn by the renderer."""
from __future__ import annotations

import gradio as gr

from clipgpt_core.errors import ClipGPTError
from clipgpt_core.images import load_image
from clipgpt_core.retrieval.nearest import NearestImages
from clipgpt_core.world.edits import DIFF_QUESTION
from clipgpt_app.zerogpu import gpu
from clipgpt_app.tabs import format_hits, gallery_file, upscale
from clipgpt_app.uploads import ImageFile



def examples() -> list[list]:
    """World scenes with one edit of each kind, and one pair with "what changed?" (image files, written once)."""
    import random
    from clipgpt_core.world import edits, scenes as world
    rows = []
    for i, kind in enumerate(edits.KINDS):
        for seed in range(100 * i, 100 * i + 100):
            ex = world.example(seed, n_objects=2)
            made = edits.random_edit(ex.scene, random.Random(seed), kind=kind)
            if made is not None:
                break
        edit, after = made
        rows.append([gallery_file(ex.image), edits.edit_text(edit), None, ""])
        if i == 0:
            pair = [rows[0][0], "", gallery_file(world.render(after, random.Random(seed))), DIFF_QUESTION]
    rows.append(pair)
    return rows


def build(finder: NearestImages) -> None:
    """Lay out the tab inside the current gr.Blocks / gr.Tab; the bundle's CLIP-GPT is read at each event."""
    bundle = finder.bundle

    def model():
        gpt = bundle.clip_gpt         # a bundle still loading is waited for here
        if gpt is None:
            raise gr.Error(f"Bundle {bundle.name} has no CLIP-GPT; train one with `python -m clipgpt_train.clip_gpt`")
        return gpt

    def parts(image_1, text_1, image_2, text_2) -> list:
        out = []
        for image, text in ((image_1, text_1), (image_2, text_2)):
            if image is not None:
                out.append(load_image(image))
            if (text or "").strip():
                out.append(text)
        if not out:
            raise gr.Error("Give an image, a text, or both")
        return out

    @gpu("quick")
    def compose_write(image_1=None, text_1="", image_2=None, text_2=""):
        """CLIP-GPT writes the text that follows the parts, in the order image 1, text 1, image 2, text 2 (empty
        ones left out): one image gives its caption; two images and "what changed?" the edit that turns the first
        into the second ("make the red star blue").

        Args:
            image_1: the first image (optional).
            text_1: the text after it (optional).
            image_2: the second image (optional).
            text_2: the text after it (optional), e.g. "what changed?".

        Returns:
            The text CLIP-GPT writes.
        """
        try:
            return model().write(parts(image_1, text_1, image_2, text_2))
        except ClipGPTError as e:
            raise gr.Error(str(e)) from e

    @gpu("quick")
    def compose_embed(image_1=None, text_1="", image_2=None, text_2="", k=8):
        """CLIP-GPT writes a CLIP image vector after the parts (image 1, text 1, image 2, text 2; empty ones left
        out): a caption gives the image it describes, an image and an edit ("make the red star blue", "remove the
        green cross", "add a small yellow circle in the top left", "replace the blue square with a white
        diamond", "change the background to black") the edited image. The vector is searched in the built-in
        gallery.

        Args:
            image_1: the first image (optional).
            text_1: the text after it (optional), e.g. an edit.
            image_2: the second image (optional).
            text_2: the text after it (optional).
            k: how many nearest gallery images to return, 1 to 48.

        Returns:
            The nearest gallery images, best first ("similarity · caption"), and the caption the vector reads as.
        """
        try:
            gpt = model()
            vector = gpt.embed(parts(image_1, text_1, image_2, text_2))
            hits = finder.builtin_index().search(vector, max(1, min(48, int(k or 8))))
            reads = gpt.captioner.caption_embeddings(vector[None])[0]
        except ClipGPTError as e:
            raise gr.Error(str(e)) from e
        return format_hits(hits), f"The written vector reads as: **{reads}**"

    @gpu("render")
    def compose_render(image_1=None, text_1="", image_2=None, text_2="", seed=0):
        """Draw the CLIP image vector CLIP-GPT writes after the parts (image 1, text 1, image 2, text 2): with the
        renderer's vector decoder when the bundle has one, else through the caption the vector reads as.

        Args:
            image_1: the first image (optional).
            text_1: the text after it (optional), e.g. an edit.
            image_2: the second image (optional).
            text_2: the text after it (optional).
            seed: the render's random seed.

        Returns:
            The render and how it was made.
        """
        try:
            gpt = model()
            vector = gpt.embed(parts(image_1, text_1, image_2, text_2))
            renderer = bundle.renderer
            if renderer is None:
                raise gr.Error(f"Bundle {bundle.name} has no renderer")
            try:
                image = renderer.decode(vector[None], seed=int(seed or 0))[0]
                how = "decoded from the vector itself (the renderer's vector decoder)"
            except ClipGPTError:     # no decoder beside this renderer: draw what the vector reads as
                caption = gpt.captioner.caption_embeddings(vector[None])[0]
                image = renderer.render([caption], seed=int(seed or 0))[0]
                how = f"drawn from the caption the vector reads as: “{caption}”"
        except ClipGPTError as e:
            raise gr.Error(str(e)) from e
        return upscale(image, 256), how

    gr.Markdown("Images and words in order — **image 1, text 1, image 2, text 2** (empty ones left out). "
                "*Write* gives the text that follows (a caption; the edit between two images after "
                f"“{DIFF_QUESTION}”); *Search* and *Render* use the CLIP image vector CLIP-GPT writes instead "
                "(a caption's image; an image with an edit applied).")
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Row():
                image_1 = ImageFile(label="Image 1", height=180, elem_id="compose-image-1")
                image_2 = ImageFile(label="Image 2", height=180, elem_id="compose-image-2")
            text_1 = gr.Textbox("", label="Text 1", placeholder="make the red star blue")
            text_2 = gr.Textbox("", label="Text 2", placeholder=DIFF_QUESTION)
            k = gr.Slider(1, 48, value=8, step=1, label="Nearest images")
            seed = gr.Number(value=0, precision=0, label="Render seed")
            with gr.Row():
                write_btn = gr.Button("Write", variant="primary")
                embed_btn = gr.Button("Search", variant="primary")
                render_btn = gr.Button("Render")
        with gr.Column(scale=3):
            written = gr.Markdown(elem_id="compose-written")
            gallery = gr.Gallery(label="Nearest images to the written vector", columns=4, height=360,
                                 elem_id="compose-gallery")
            reads = gr.Markdown(elem_id="compose-reads")
            render = gr.Image(label="Render of the written vector", type="filepath", height=256)
            how = gr.Markdown()
    inputs = [image_1, text_1, image_2, text_2]
    write_btn.click(compose_write, inputs, [written], api_name="compose_write")
    embed_btn.click(compose_embed, inputs + [k], [gallery, reads], api_name="compose_embed")
    render_btn.click(compose_render, inputs + [seed], [render, how], api_name="compose_render")
    gr.Examples(examples(), inputs, label="An image and an edit; two images and what changed")
