import contextlib
import os

# Tests run offline and on the CPU, like CI; set before torch / huggingface_hub are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Galleries and folder indices go to a per-session temporary cache, not ~/.cache."""
    from clipgpt_core.retrieval import local as index
    monkeypatch.setattr(index, "DEFAULT_CACHE", tmp_path_factory.getbasetemp() / "clipgpt-cache")


@pytest.fixture(scope="session")
def bundle():
    """The built-in bundle, with a small gallery so tests stay fast."""
    from clipgpt_core import load_bundle
    b = load_bundle()
    b.gallery = {"kind": "shapesworld", "size": 400, "seed": 0}
    return b


@contextlib.contextmanager
def launched_app(bundle, launch: dict | None = None, queue: dict | None = None, **kwargs):
    """The real app for `bundle` (build_demo's kwargs; `launch`: more launch() kwargs; `queue`: queue()'s),
    launched on loopback; yields a gradio_client Client."""
    from clipgpt_app import main as app
    from gradio_client import Client
    demo = app.build_demo(bundle, progress=False, **kwargs)
    _, url, _ = app.launch(demo.queue(**(queue or {})), prevent_thread_lock=True, server_name="127.0.0.1",
                           server_port=None, **(launch or {}))
    try:
        yield Client(url, verbose=False)
    finally:
        demo.close()
