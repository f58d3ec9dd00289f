"""Where the shipped assets (the built-in bundle, example images) are.

`pip install .` puts the repository's assets/ inside the package (clipgpt_core/assets, see
pyproject.toml); a checkout, or an editable install, keeps them at the repository root. Both are
tried, in that order, so the built-in bundle loads from any working directory.
"""
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _assets_dir() -> Path:
    for candidate in (_HERE / "assets", _HERE.parent / "assets"):
        if (candidate / "shapes" / "manifest.json").is_file():
            return candidate
    return _HERE.parent / "assets"      # not found: load_bundle then names this path in its error


ASSETS = _assets_dir()
EXAMPLES = ASSETS / "examples"
# the folder holding this package (a checkout's root, or site-packages): what a child process of ours (Spark's
# workers, the gallery build) puts on its PYTHONPATH to import the package from where this process did
PACKAGE_PARENT = _HERE.parent
# a checkout's measured figures (benchmarks/results), which a tab may plot; an installed package has none
BENCHMARK_RESULTS = _HERE.parent / "benchmarks" / "results"
