"""The "Nearest images" tab: a thin UI over clipgpt_core.retrieval.nearest.NearestImages."""
from __future__ import annotations

import gradio as gr

from clipgpt_core.paths import EXAMPLES
from clipgpt_core.errors import ClipGPTError
from clipgpt_core.retrieval.local import existing_index as gallery_layout
from clipgpt_core.retrieval.nearest import TEXT_MODES, NearestImages
from clipgpt_core.world.scenes import ATTRIBUTES
from clipgpt_app.zerogpu import gpu
from clipgpt_app.tabs import format_hits
from clipgpt_app.uploads import ImageFile

SOURCES = ["Built-in gallery", "My folder", "Remote clip-retrieval back-end"]
TEXT_EXAMPLES = ["a red circle", "a large blue star on a black background",
                 "a small yellow triangle in the top left", "two green squares",
                 "a white diamond above an orange circle"]


def build(finder: NearestImages) -> None:
    """Lay out the tab inside the current gr.Blocks / gr.Tab."""

    def check_query(text, image, text_mode):
        # answered here before a remote back-end is contacted (the core says the same, after)
        if not (text or "").strip() and image is None:
            raise gr.Error("Type a text query, give an image, or both")
        if text_mode not in TEXT_MODES:
            raise gr.Error(f"Text as: one of {', '.join(TEXT_MODES)}")

    @gpu("quick")
    def search(text, image=None, text_weight=0.5, k=12, source=SOURCES[0], folder="", url="", indice_name="shapes",
               text_mode="raw"):
        """Find the images nearest to a text query, an image query, or both, in CLIP's joint embedding space.

        Args:
            text: what to look for, e.g. "a large red star on a black background" (may be empty when an image is given).
            image: an image file to search by (optional).
            text_weight: 0 to 1, how much the text counts against the image when both are given.
            k: how many images to return, 1 to 48.
            source: where to search: "Built-in gallery", "My folder" or "Remote clip-retrieval back-end".
            folder: for "My folder", a server folder of images (a shared app reads only the folders its owner allowed).
            url: for a remote back-end, its address, e.g. http://127.0.0.1:1234.
            indice_name: for a remote back-end, the index to query.
            text_mode: "raw" (CLIP's text embedding) or "via prior" (the image embedding predicted from the text).

        Returns:
            The nearest images, best first, each captioned "similarity · caption", and a status line.
        """
        check_query(text, image, text_mode)
        try:
            if source == SOURCES[2]:
                hits = finder.search_remote(url, indice_name, text, image, text_weight, k, text_mode)
            else:
                hits = finder.search(text, image, text_weight, k, folder=folder if source == SOURCES[1] else None,
                                     text_mode=text_mode)
        except ClipGPTError as e:      # bad uploads, folders, back-ends; anything else is a bug
            raise gr.Error(str(e)) from e
        where = {SOURCES[0]: "the built-in gallery", SOURCES[1]: f"folder {folder}",
                 SOURCES[2]: f"{indice_name} at {url}"}[source]
        return format_hits(hits), f"{len(hits)} nearest images from {where}."

    @gpu("index")
    def index_folder(folder, progress=gr.Progress(track_tqdm=True)):
        """Index a folder of images on the server with this bundle's CLIP, so search can use it as "My folder".
        A folder already in clip-retrieval's layout (an index, or the embeddings `clip-retrieval inference`
        wrote) is opened as it is. A shared app indexes only the folders its owner allowed (--allow-dir).

        Args:
            folder: the server folder of images (searched recursively), or an index / embeddings folder.

        Returns:
            A status line: how many images were indexed.
        """
        try:
            idx = finder.index_folder(folder)
        except (ClipGPTError, OSError) as e:   # OSError: the user's folder (permissions, vanished files)
            raise gr.Error(str(e)) from e
        how = "Opened the index of" if gallery_layout(folder) else "Indexed"
        return f"{how} {len(idx)} images from {folder}. Pick “My folder” and search."

    @gpu("quick")
    def zero_shot(image):
        """Read an image zero-shot: CLIP's probabilities for each attribute of ShapesWorld (colour, shape, size,
        position, background), comparing the image with one caption per value.

        Args:
            image: the image file to read.

        Returns:
            One label per attribute, each with its most probable values.
        """
        if image is None:
            return [None] * len(ATTRIBUTES)
        try:
            result = finder.zero_shot(image)
        except ClipGPTError as e:
            raise gr.Error(str(e)) from e
        return [result[a] for a in ATTRIBUTES]

    with gr.Row():
        with gr.Column(scale=2):
            text = gr.Textbox("", label="Text query", placeholder="a large red star on a black background")
            text_mode = gr.Radio(list(TEXT_MODES), value="raw", label="Text as",
                                 info="raw: CLIP's text embedding · via prior: the image embedding "
                                      "the caption->CLIP prior predicts for it")
            image = ImageFile(label="Image query", height=220, elem_id="nearest-image")
            text_weight = gr.Slider(0, 1, value=0.5, step=0.05, label="Text weight (when both are given)")
            k = gr.Slider(1, 48, value=12, step=1, label="Number of images")
            source = gr.Radio(SOURCES, value=SOURCES[0], label="Search in")
            with gr.Accordion("Folder and remote sources", open=False):
                folder = gr.Textbox("", label="Folder of images", placeholder="/path/to/images")
                index_btn = gr.Button("Index folder")
                url = gr.Textbox("", label="Back-end URL", placeholder="http://127.0.0.1:1234")
                indice_name = gr.Textbox(label="Index name", value="shapes")
            search_btn = gr.Button("Search", variant="primary")
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Nearest images (similarity · caption)", columns=4, height=520,
                                 elem_id="nearest-gallery")
            status = gr.Markdown(elem_id="nearest-status")
    gr.Markdown("### Zero-shot reading of the image query")
    with gr.Row():
        labels = [gr.Label(label=a, num_top_classes=3) for a in ATTRIBUTES]

    inputs = [text, image, text_weight, k, source, folder, url, indice_name, text_mode]
    search_btn.click(search, inputs, [gallery, status], api_name="search")
    text.submit(search, inputs, [gallery, status], api_name="search_submit",
                api_visibility="undocumented")   # /search under another trigger: callable, not a second tool
    index_btn.click(index_folder, [folder], [status], api_name="index_folder")
    image.change(zero_shot, [image], labels, api_name="zero_shot")
    # cached on first click, not at launch: the built-in gallery may still be building then
    gr.Examples([[t] for t in TEXT_EXAMPLES], [text], [gallery, status], fn=search, label="Text queries",
                cache_examples=True, cache_mode="lazy")
    example_images = sorted(EXAMPLES.glob("*.png"))
    if example_images:
        gr.Examples([[str(p)] for p in example_images], [image], label="Image queries")
