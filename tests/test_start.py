"""The app answers before its models are in memory: `import app` loads no model library, and `python app.py`
serves its page while the bundle loads in the background (bundle.LoadingBundle); the first event waits."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gradio_client import Client

from clipgpt_core import BundleError
from clipgpt_core.bundle import LoadingBundle
from clipgpt_core.paths import ASSETS
from benchmarks.bench_start import free_port, wait_until_answering

ROOT = Path(__file__).resolve().parents[1]
MODEL_LIBRARIES = ("torch", "open_clip", "diffusers", "transformers", "sklearn", "timm")


def test_importing_the_app_loads_no_model_library():
    code = f"import sys, app; print(sorted(m for m in {MODEL_LIBRARIES!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def small_bundle(tmp_path: Path) -> Path:
    """The built-in bundle's components (linked, not copied) with a 40-image gallery."""
    out = tmp_path / "bundle"
    out.mkdir()
    for entry in (ASSETS / "shapes").iterdir():
        if entry.name != "manifest.json":
            (out / entry.name).symlink_to(entry)
    manifest = json.loads((ASSETS / "shapes" / "manifest.json").read_text())
    manifest["gallery"] = {"kind": "shapesworld", "size": 40, "seed": 0}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_app_py_answers_while_its_bundle_loads(tmp_path):
    port = free_port()
    env = dict(os.environ, CLIPGPT_CACHE=str(tmp_path / "cache"))
    log = open(tmp_path / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py", "--bundle", str(small_bundle(tmp_path)), "--port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        try:
            wait_until_answering(proc, url, timeout=180)
        except (RuntimeError, TimeoutError) as e:
            raise AssertionError((tmp_path / "app.log").read_text()[-3000:]) from e
        client = Client(url, verbose=False)
        rows = client.predict(n=4, temperature=1.0, top_k=0, top_p=1.0, prefix="a red", seed=0,
                              api_name="/sample")["data"]                          # waits for the bundle
        assert rows and all(r[0].startswith("a red") for r in rows)
        hits, _ = client.predict(text="a large blue circle", image=None, text_weight=0.5, k=4, source="Built-in gallery",
                                 folder="", url="", indice_name="shapes", text_mode="raw", api_name="/search")
        assert len(hits) == 4                                                       # and for its gallery
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert "Traceback" not in (tmp_path / "app.log").read_text()


def test_a_loading_bundle_lays_out_from_its_manifest_and_raises_its_load_error(tmp_path):
    with pytest.raises(BundleError, match="no manifest.json"):
        LoadingBundle(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text(json.dumps({"name": "broken", "components": {
        "clip": {"kind": "open_clip", "path": "clip"}, "renderer": {"path": "renderer"}}}))
    b = LoadingBundle(broken)
    assert (b.name, b.gallery, b.has_renderer()) == ("broken", None, True)    # no load needed for these
    assert "not loaded" in repr(b)
    for _ in range(2):                                                         # the same error to every caller
        with pytest.raises(BundleError, match="incomplete"):
            b.clip
    ok = LoadingBundle("shapes").start()
    assert ok.clip_name == ok.get().clip.model_name and ok.prior is ok.get().prior
