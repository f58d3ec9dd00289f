"""ZeroGPU, the GPU a free Hugging Face account's Gradio Space gets: what the app does for it.

ZeroGPU lends a GPU to a function decorated with `spaces.GPU` for the length of one call (`duration`, seconds: the
longer, the more of a visitor's daily quota it asks for), and wants the models moved to CUDA once, at start, outside
those functions. The `spaces` package is effect-free elsewhere (its decorator returns the function itself), so the
app imports it where it is installed and decorates its model calls the same way on every machine; without the
package, `gpu` is a no-op. On a CPU nothing changes.
"""
from __future__ import annotations

import os

try:
    import spaces
except ImportError:          # not on a Space, and not installed: the decorators do nothing
    spaces = None

# seconds of GPU each kind of call may hold on ZeroGPU; sized to the published bundle on a half card
DURATIONS = {"quick": 20, "caption": 40, "render": 90, "index": 300, "explain": 300, "layer": 600}


def on_zero_gpu() -> bool:
    """Is this a ZeroGPU Space? (the Hub sets SPACES_ZERO_GPU there)."""
    return spaces is not None and os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")


def gpu(kind: str):
    """Decorate a model call as ZeroGPU asks: `spaces.GPU(duration=DURATIONS[kind])`, or nothing without `spaces`."""
    duration = DURATIONS[kind]

    def wrap(fn):
        return spaces.GPU(duration=duration)(fn) if spaces is not None else fn
    return wrap


def device() -> str:
    """Where the models live: CUDA on ZeroGPU (moved at start, as it asks), else the CPU."""
    return "cuda" if on_zero_gpu() else "cpu"
