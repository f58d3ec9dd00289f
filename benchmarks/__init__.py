"""Benchmarks: scripts that measure the project and write benchmarks/results/. Run each from the
repository root as a module, e.g. `python -m benchmarks.bench_clip`; they import the core, never the
other way round."""

import json
from pathlib import Path


def write_report(report: dict, out) -> None:
    """A benchmark's result file (one current file per benchmark; git keeps the history), and the report printed."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
