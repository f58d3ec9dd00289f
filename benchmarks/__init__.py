"""Benchmarks: scripts that measure the project and write benchmarks/results/. Run each from the
repository root as a module, e.g. `python -m benchmarks.bench_clip`; they import the core, never the
other way round."""
