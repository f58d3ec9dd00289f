"""`clipgpt space --out DIR` writes a folder a Hugging Face Space accepts: every file over 10 MiB goes through
LFS (read back by git itself), the front matter is the repository's own, and `python app.py` runs from it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gradio_client import Client

from benchmarks.bench_start import free_port, wait_until_answering
from clipgpt_app.cli import main as clipgpt
from clipgpt_app.space import HUB_FILE_LIMIT, front_matter

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("space") / "clipgpt-space"
    clipgpt(["space", "--out", str(out)])
    return out


def test_the_space_folder_holds_the_app_and_sends_big_files_through_lfs(space):
    assert {"app.py", "requirements.txt", "README.md", ".gitattributes", "clipgpt_core", "clipgpt_app",
            "assets"} <= {p.name for p in space.iterdir()}
    assert (space / "assets" / "shapes" / "manifest.json").is_file() and any((space / "assets" / "examples").iterdir())
    big = [p for p in space.rglob("*") if p.is_file() and p.stat().st_size > HUB_FILE_LIMIT]
    assert len(big) >= 2                                       # the CLIP and the prior
    subprocess.run(["git", "init", "-q", str(space)], check=True)
    for p in big:
        attr = subprocess.run(["git", "check-attr", "filter", "--", str(p.relative_to(space))], cwd=space,
                              capture_output=True, text=True, check=True).stdout
        assert attr.strip().endswith("filter: lfs"), attr
    requirements = (space / "requirements.txt").read_text()
    assert "gradio[mcp]==" in requirements and "torch==" in requirements and "pytest" not in requirements
    import gradio as gr
    matter = front_matter()                                                 # the repository README's, copied
    assert (space / "README.md").read_text().startswith(matter) and "app_file: app.py" in matter
    assert f"sdk_version: {gr.__version__}\n" in matter                    # the Hub runs the Gradio we pin
    with pytest.raises(SystemExit):                                         # never over a folder with files in it
        clipgpt(["space", "--out", str(space)])


def test_python_app_py_runs_from_the_space_folder(space, tmp_path):
    manifest = space / "assets" / "shapes" / "manifest.json"            # a small gallery keeps the test short
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"gallery": {"kind": "shapesworld", "size": 40,
                                                                                   "seed": 0}}))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"CLIPGPT_CACHE": str(tmp_path / "cache")}
    where = subprocess.run([sys.executable, "-c", "import clipgpt_core, clipgpt_app; print(clipgpt_core.__file__, "
                            "clipgpt_app.__file__)"], cwd=space, env=env, capture_output=True, text=True, check=True)
    assert all(Path(p).is_relative_to(space) for p in where.stdout.split())   # the Space's own copy, not ours
    port = free_port()
    log = open(tmp_path / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=space, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        try:
            wait_until_answering(proc, f"http://127.0.0.1:{port}/", timeout=180)
        except (RuntimeError, TimeoutError) as e:
            raise AssertionError((tmp_path / "app.log").read_text()[-3000:]) from e
        rows = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            n=3, temperature=1.0, top_k=0, top_p=1.0, prefix="a blue", seed=0, api_name="/sample")["data"]
        assert len(rows) == 3 and all(r[0].startswith("a blue") for r in rows)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert "Traceback" not in (tmp_path / "app.log").read_text()


def test_a_zero_gpu_space_for_the_published_bundle_fetches_its_weights_at_start(tmp_path):
    out = tmp_path / "published-space"
    clipgpt(["space", "--out", str(out), "--bundle", "published", "--zero-gpu"])
    app = (out / "app.py").read_text()
    assert "published()" in app and '"--bundle", "published"' in app        # fetched at start, then served
    assert not list(out.rglob("*.pt")) and not (out / "assets" / "published").exists()    # no published weights copied
    readme = (out / "README.md").read_text()
    assert "suggested_hardware: zero-a10g" in readme and 'python_version: "3.12"' in readme   # what ZeroGPU runs
    requirements = (out / "requirements.txt").read_text()
    assert "torch==2.9.1" in requirements and "spaces==" in requirements and "torch==2.14" not in requirements
    compile(app, "app.py", "exec")


def test_model_calls_are_zero_gpu_functions_and_plain_on_a_cpu():
    from clipgpt_app import zerogpu
    assert zerogpu.spaces is not None                  # installed with the app, so the Space's code path runs here
    assert not zerogpu.on_zero_gpu() and zerogpu.device() == "cpu"

    def f(x, y=1):
        """doc"""
        return x + y
    wrapped = zerogpu.gpu("render")(f)
    assert wrapped(1) == 2 and wrapped.__doc__ == "doc"     # effect-free off ZeroGPU: the API and MCP see f
