"""What every way of drawing shares (the text renderer, the decoders of CLIP vectors, few-step SD): its error, its
limits, and the step callback that lets quick requests run between denoising steps. Its own module so that those
parts and renderer.py import it without importing each other."""
from __future__ import annotations

import secrets

from ..batching import yield_to_quick
from ..errors import ClipGPTError

STEPS = (1, 200)
GUIDANCE = (0.0, 30.0)
NUM_IMAGES = (1, 16)
MAX_BATCH = 64                      # prompts x images per call
PRIOR_TEMPERATURE = (0.0, 4.0)      # the sampling prior's residual scale (embedding_prior.sample)
PRIOR_TEMPERATURE_DEFAULT = 0.5     # measured: fidelity 0.58 vs 0.45 at 1.0, diversity 0.64 vs 0.66 (docs Render)


class RenderError(ClipGPTError, ValueError):
    """Input or weights the renderer cannot use; the message says what is wrong and what to do."""


def yield_between_steps(pipe, step: int, timestep, tensors: dict) -> dict:
    """A diffusers callback_on_step_end: between denoising steps, other users' quick requests run first
    (batching.yield_to_quick)."""
    yield_to_quick()
    return tensors


def check_options(num_images, guidance_scale, steps, seed, n_inputs: int, inputs: str = "prompts") -> int:
    """Reject bad options with a concise message; -> the seed (drawn when None)."""
    if not (isinstance(steps, int) and STEPS[0] <= steps <= STEPS[1]):
        raise RenderError(f"steps must be a whole number from {STEPS[0]} to {STEPS[1]}, got {steps}")
    if not GUIDANCE[0] <= float(guidance_scale) <= GUIDANCE[1]:
        raise RenderError(f"guidance scale must be from {GUIDANCE[0]:g} to {GUIDANCE[1]:g}, got {guidance_scale}")
    if not (isinstance(num_images, int) and NUM_IMAGES[0] <= num_images <= NUM_IMAGES[1]):
        raise RenderError(f"number of images must be from {NUM_IMAGES[0]} to {NUM_IMAGES[1]}, got {num_images}")
    if n_inputs * num_images > MAX_BATCH:
        raise RenderError(f"{n_inputs} {inputs} x {num_images} images is more than {MAX_BATCH} at once")
    if seed is None:
        seed = secrets.randbelow(2**31)
    if not (isinstance(seed, int) and 0 <= seed < 2**63):
        raise RenderError(f"seed must be a whole number >= 0, got {seed}")
    return seed
