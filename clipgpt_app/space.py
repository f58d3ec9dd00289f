"""`clipgpt space --out DIR`: a folder that a Hugging Face Space accepts as it is.

    clipgpt space --out ../clipgpt-space
    hf upload USER/clipgpt ../clipgpt-space . --repo-type space       # or: git init, git lfs install, push

The folder holds app.py, the library and the app (clipgpt_core, clipgpt_app), the built-in bundle and the
example images, the pinned requirements the app needs (no test or Spark pins), a README whose front matter
tells the Hub how to run it, and a .gitattributes that sends every weight file through LFS/Xet: the Hub
refuses plain files over 10 MiB, and the built-in CLIP (31 MB) and prior (14 MB) are. This repository is
cloned without LFS (CI reads its weights as plain files); only the written folder uses it.
"""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import clipgpt_app
import clipgpt_core
from clipgpt_core.errors import InputError
from clipgpt_core.paths import ASSETS, EXAMPLES

HUB_FILE_LIMIT = 10 * 1024 * 1024          # bytes; the Hub's limit for a file outside LFS/Xet
LFS = "filter=lfs diff=lfs merge=lfs -text"
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.npy", "*.parquet", "*.index")
NOT_ON_A_SPACE = ("pytest", "playwright", "pyspark")     # tests and distributed indexing: not the app's
APP_PY = '"""The Space\'s entry point: the CLIP GPT app (clipgpt_app.main)."""\nfrom clipgpt_app.main import main\n\n' \
         'if __name__ == "__main__":\n    main()\n'
# the published bundle's Space copies no weights: at start it fetches them from their Hub ids (and the S3 URL),
# converts them once into the Space's disk (not persistent: a restart fetches again), then serves them
PUBLISHED_APP_PY = ('"""The Space\'s entry point: the CLIP GPT app on the seeds\' published models, fetched at start."""\n'
                    "from clipgpt_app.main import main\nfrom clipgpt_core.published.assemble import default_published_dir, "
                    "published\n\nif __name__ == \"__main__\":\n    if not (default_published_dir() / \"manifest.json\").is_file():\n"
                    "        published()\n    main([\"--bundle\", \"published\"])\n")
ZERO_GPU = "suggested_hardware: zero-a10g"       # front matter: a ZeroGPU Space (the app decorates its model calls)
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyi", "*.egg-info")


def front_matter(readme: Path | None = None) -> str:
    """The front matter of this checkout's README (title, sdk, sdk_version, app_file: what the Hub reads), the
    one place it is written."""
    readme = readme or ASSETS.parent / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if not text.startswith("---\n") or "\n---\n" not in text[3:]:
        raise InputError(f"no front matter at the top of {readme}: write the Space from a checkout of the repository")
    return text[:text.index("\n---\n", 3) + 5]


# ZeroGPU runs Python 3.10 / 3.12 and PyTorch 2.8-2.11 (hub-docs, spaces-zerogpu.md): its Space pins those
ZERO_GPU_PINS = {"torch": "torch==2.9.1", "torchvision": "torchvision==0.24.1"}
ZERO_GPU_PYTHON = '"3.12"'


def requirements(source: Path | None = None, zero_gpu: bool = False) -> str:
    """The pinned requirements (this checkout's requirements.txt) less what only tests and Spark need; for ZeroGPU,
    the torch it supports."""
    source = source or ASSETS.parent / "requirements.txt"
    if not source.is_file():
        raise InputError(f"no requirements.txt at {source}: write the Space from a checkout of the repository")
    keep = [line for line in source.read_text().splitlines()
            if not line.split("#")[0].strip().lower().startswith(NOT_ON_A_SPACE)]
    if zero_gpu:
        keep = [ZERO_GPU_PINS.get(line.split("==")[0].strip(), line) for line in keep]
    return "\n".join(keep) + "\n"


def write_space(out: str | Path, bundle: str = "shapes", zero_gpu: bool = False) -> Path:
    """Write the Space folder at `out` (which must not exist, or be empty) -> its path. bundle: "shapes" (the
    built-in, copied in) or "published" (fetched at start); zero_gpu: say in the front matter that it runs on ZeroGPU."""
    if bundle not in ("shapes", "published"):
        raise InputError(f"a Space serves the built-in bundle (shapes) or the published one, not {bundle!r}")
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not an empty folder; name a new one")
    out.mkdir(parents=True, exist_ok=True)
    for package in (clipgpt_core, clipgpt_app):
        src = Path(package.__file__).parent
        shutil.copytree(src, out / src.name, ignore=shutil.ignore_patterns("assets", "__pycache__", "*.pyc", "*.pyi"))
    shutil.copytree(ASSETS / "shapes", out / "assets" / "shapes", ignore=SKIP)
    shutil.copytree(EXAMPLES, out / "assets" / "examples", ignore=SKIP)
    (out / "app.py").write_text(PUBLISHED_APP_PY if bundle == "published" else APP_PY)
    (out / "requirements.txt").write_text(requirements(zero_gpu=zero_gpu))
    matter = front_matter()
    if zero_gpu:
        matter = re.sub(r'python_version: .*', f"python_version: {ZERO_GPU_PYTHON}", matter)
        matter = matter[:-4] + ZERO_GPU + "\n---\n"
    on = ("the seeds' published models (CLIP GPT, ClipCap, OpenAI CLIP, Stable Diffusion 1.5), fetched from their "
          "Hub ids at start" if bundle == "published" else "the built-in ShapesWorld bundle")
    (out / "README.md").write_text(matter + "\n# CLIP GPT\n\nAn interactive workbench for CLIP's joint "
                                   f"text-image space with a caption prior, on {on}.\n")
    big = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                 if p.is_file() and p.stat().st_size > HUB_FILE_LIMIT)
    lines = [f"{pattern} {LFS}" for pattern in LFS_PATTERNS]
    lines += [f"{path} {LFS}" for path in big if not any(Path(path).match(p) for p in LFS_PATTERNS)]
    (out / ".gitattributes").write_text("\n".join(lines) + "\n")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="clipgpt space", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="a new (or empty) folder to write the Space into")
    p.add_argument("--bundle", choices=["shapes", "published"], default="shapes",
                   help="the built-in bundle (copied in), or the seeds' published models (fetched when the Space starts)")
    p.add_argument("--zero-gpu", action="store_true", help="a ZeroGPU Space (a free account's Gradio Spaces run there)")
    args = p.parse_args(argv)
    try:
        out = write_space(args.out, args.bundle, args.zero_gpu)
    except InputError as e:
        p.error(str(e))
    print(f"wrote a Space at {out}; upload it with: hf upload USER/NAME {out} . --repo-type space")


if __name__ == "__main__":
    main()
