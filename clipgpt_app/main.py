"""CLIP GPT — a workbench for CLIP's joint text-image space.

    python app.py                      # built-in ShapesWorld bundle, http://127.0.0.1:7860
    python app.py --share              # also a temporary public link
    python app.py --bundle open_clip:ViT-B-32/laion2b_s34b_b79k --port 7861
    python app.py --mcp                # also an MCP server: search, caption, explain, render... as tools
"""
from __future__ import annotations

import argparse
import os
import sys

import gradio as gr

from clipgpt_core.access import ServerFiles, is_shared
from clipgpt_app import zerogpu
from clipgpt_core.bundle import LoadingBundle, load_bundle
from clipgpt_core.retrieval.nearest import NearestImages
from clipgpt_app.tabs import caption, compose, explain, nearest, render, sample

# Quick events (sample, search, zero-shot, caption, score) run many at once: their model calls meet in the core's
# batchers (clipgpt_core/batching.py), one model pass for everyone waiting; long ones (render, explain) keep
# their own limit of one and give way to quick work between steps.
QUEUE = dict(max_size=64, default_concurrency_limit=16)

INTRO = """# CLIP GPT
Explore a CLIP model's joint text–image space. The built-in bundle is trained on **ShapesWorld**
(coloured shapes on flat backgrounds), so everything runs offline on a CPU."""


def build_demo(bundle, progress: bool = True, files: ServerFiles | None = None, finder: NearestImages | None = None,
               prepare: bool = True) -> gr.Blocks:
    """bundle: a Bundle, or a LoadingBundle that loads while the app already answers (no tab touches a model
    before its first event). files: which server folders users may name. None: any for a local app, none on a Space (SPACE_ID is
    set), so an app built without main() is not open on a Space either. prepare=False leaves the built-in
    gallery to finder.prepare_builtin_index() (main calls it once the page answers) or to the first search."""
    if files is None:
        files = ServerFiles.shared() if is_shared() else ServerFiles()
    finder = finder or NearestImages(bundle, progress=progress, files=files)
    with gr.Blocks(title="CLIP GPT") as demo:
        gr.Markdown(INTRO + f"\n\nBundle: `{bundle.name}` · CLIP `{bundle.clip_name}`")
        with gr.Tab("Sample captions"):
            sample.build(bundle)
        with gr.Tab("Caption an image"):
            caption.build(bundle)
        with gr.Tab("Nearest images"):
            nearest.build(finder)
        with gr.Tab("Compose"):
            compose.build(finder)
        with gr.Tab("Render"):
            render.build(bundle)
        with gr.Tab("Explain"):
            explain.build(bundle, files)
    # Build (or load) the built-in gallery while the app already answers; the first gallery search waits
    # for it. Started only now: the tabs' gr.Progress(track_tqdm=True) patch tqdm's class, and a progress
    # bar begun before that patch fails when it closes after it.
    if prepare:
        finder.prepare_builtin_index()
    return demo


def main(argv=None):
    p = argparse.ArgumentParser(description="CLIP GPT workbench")
    p.add_argument("--bundle", default=None, help="built-in name, bundle directory, or open_clip:ARCH/TAG")
    p.add_argument("--share", action="store_true", help="create a temporary public link")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--allow-dir", action="append", default=[], metavar="DIR",
                   help="on a shared app (a Space, --share, or a --host beyond loopback), a server folder users "
                        "may index and explain (repeatable); without it, server folders are off there")
    p.add_argument("--allow-backend", action="append", default=[], metavar="URL",
                   help="on a shared app, a clip-retrieval back-end users may query (repeatable); without it, "
                        "the Nearest tab's remote back-ends are off there")
    p.add_argument("--torch-threads", type=int, default=int(os.environ.get("CLIPGPT_TORCH_THREADS", 1)), metavar="N",
                   help="threads each model call uses (default 1: users' calls run side by side on the cores; see "
                        "threads_per_call)")
    p.add_argument("--mcp", action="store_true",
                   help="also serve the app as an MCP server (at /gradio_api/mcp): search, caption, explain, "
                        "render and the other endpoints become tools, their docstrings the tools' schemas")
    args = p.parse_args(argv)
    threads_per_call(args.torch_threads)
    fewer_malloc_arenas()
    if args.mcp:
        check_mcp(p)
    files = server_files(args.host, args.share, args.allow_dir, args.allow_backend)
    # a bundle directory loads in the background, so the page answers at once (a warm start waited ~5 s
    # for torch, open_clip and the weights); a pretrained one loads here, where a missing download fails fast
    spec = args.bundle or "shapes"
    where = zerogpu.device()       # ZeroGPU: the models go to CUDA once, here, as it asks
    bundle = load_bundle(spec, where) if spec.startswith("open_clip:") else LoadingBundle(spec, where)
    finder = NearestImages(bundle, files=files)
    demo = build_demo(bundle, files=files, finder=finder, prepare=False)
    launch(demo.queue(**QUEUE), share=args.share, server_name=args.host, server_port=args.port, mcp_server=args.mcp,
           prevent_thread_lock=True)
    # only now the models and the gallery, which would otherwise compete with the launch for the CPU
    if isinstance(bundle, LoadingBundle):
        bundle.start()
    finder.prepare_builtin_index()
    demo.block_thread()


# what each MCP tool cannot do without: marked required in its schema (an agent then sends it), the rest optional
MCP_REQUIRED = {"score": ("text",), "caption": ("image",), "index_folder": ("folder",), "zero_shot": ("image",),
                "render": ("prompt",), "variations": ("image",), "load_tokens": ("path",),
                "explain_apply": ("saved_file",), "explain_units": ("model_file",), "decode_image": ("image",),
                "interpolate": ("image_a", "image_b"), "text_diff": ("image", "from_text", "to_text"),
                "sample_prior": ("prompt",)}


def launch(demo: gr.Blocks, **kwargs):
    """demo.launch(**kwargs), with the MCP tools' schemas and results made exact: Gradio 6.17 writes a parameter's
    default there only when it is truthy, so an agent reading the schema cannot tell that seed=0, budget=0 or
    text="" need not be sent; it marks nothing required (MCP_REQUIRED says what is); and a gallery comes back as
    the text of its items, each naming the server file behind its URL: the URL alone is kept."""
    out = demo.launch(**kwargs)
    server = demo.mcp_server_obj
    if server is not None:
        schema_of, postprocess = server.get_input_schema, server.postprocess_output_data

        def get_input_schema(tool_name, parameters=None):
            schema, files = schema_of(tool_name, parameters)
            info = server.api_info["named_endpoints"][server.tool_to_endpoint[tool_name]]
            required = [p for p in MCP_REQUIRED.get(tool_name, ()) if p in schema["properties"]]
            for param in info["parameters"]:
                prop = schema["properties"].get(param["parameter_name"])
                if prop is not None and param.get("parameter_has_default") and "default" not in prop:
                    prop["default"] = param["parameter_default"]
            for name in required:
                schema["properties"][name].pop("default", None)
            if required:
                schema["required"] = required
            return schema, files

        def postprocess_output_data(data, root_url):
            from gradio import processing_utils
            return postprocess([_urls_only(d) for d in processing_utils.add_root_url(data, root_url, None)], root_url)
        server.get_input_schema = get_input_schema
        server.postprocess_output_data = postprocess_output_data
    return out


def _urls_only(output, top: bool = True):
    """Files inside an output (a gallery's items) as their URL alone, no server path; a top-level file stays whole:
    Gradio reads its path to send the image itself."""
    if isinstance(output, list):
        return [_urls_only(o, False) for o in output]
    if isinstance(output, dict):
        if not top and "path" in output and "url" in output:
            return {"url": output["url"]}
        return {k: _urls_only(v, False) for k, v in output.items()} if not top else output
    return output


def fewer_malloc_arenas(n: int = 2) -> None:
    """At most n glibc malloc arenas (M_ARENA_MAX), unless MALLOC_ARENA_MAX says otherwise. glibc gives threads that
    allocate at once arenas of their own, up to 8 a core, and memory freed into one stays there: a server's many
    worker threads then grow the process under load (docs/results.md, Serving: memory). Before any thread starts."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, n)            # -8: M_ARENA_MAX in glibc's malloc.h
    except (OSError, AttributeError):                        # not glibc (musl): nothing to do
        pass


def threads_per_call(n: int) -> None:
    """Each model call on n threads (OpenMP and MKL), set before torch is imported. A server runs calls from
    many threads (Gradio's workers, the batchers, a render); every thread that has run torch keeps an OpenMP
    team, and once there are more OpenMP threads than cores libgomp stops spin-waiting, so each small op of a
    small model waits on a wake-up (a render went from 0.46 s to 1.2 s). With one thread a call there are no
    teams: two calls run side by side on two cores, and a long render leaves a core to quick requests."""
    if n < 1:
        raise SystemExit(f"--torch-threads must be 1 or more, got {n}")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    if "torch" in sys.modules:             # imported already (the app started from Python): set it directly
        sys.modules["torch"].set_num_threads(n)


def server_files(host: str, share: bool, allow_dirs, allow_backends=()) -> ServerFiles:
    """Any server folder and back-end for a local app; on a shared one (a Space, --share, a --host beyond
    loopback) only the --allow-dir folders and --allow-backend URLs."""
    return ServerFiles.shared(allow_dirs, allow_backends) if is_shared(host, share) else ServerFiles()


def check_mcp(parser: argparse.ArgumentParser) -> None:
    """--mcp needs Gradio's `mcp` extra; without it, say how to get it instead of a traceback at launch."""
    try:
        import mcp  # noqa: F401
    except ImportError:
        parser.error(f"--mcp needs Gradio's MCP extra, which is not installed: "
                     f"pip install 'gradio[mcp]=={gr.__version__}'")


if __name__ == "__main__":
    main()
