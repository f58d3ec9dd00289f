"""What every way of drawing shares (the text renderer, the decoders of CLIP vectors, few-step SD): its error, its
limits, and the step callback that lets quick requests run between denoising steps. Its own module so that those
parts and renderer.py import it without importing each other."""
from __future__ import annotations

from ..batching import yield_to_quick
from ..errors import ClipGPTError

STEPS = (1, 200)
NUM_IMAGES = (1, 16)
MAX_BATCH = 64                      # prompts x images per call


class RenderError(ClipGPTError, ValueError):
    """Input or weights the renderer cannot use; the message says what is wrong and what to do."""


def yield_between_steps(pipe, step: int, timestep, tensors: dict) -> dict:
    """A diffusers callback_on_step_end: between denoising steps, other users' quick requests run first
    (batching.yield_to_quick)."""
    yield_to_quick()
    return tensors
