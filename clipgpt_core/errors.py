"""The root of every error CLIP GPT raises on purpose.

UIs catch `ClipGPTError` and show its message; anything else is a bug and surfaces as one.
Each subclass also derives from the builtin it used to be (ValueError for bad input,
RuntimeError for missing resources), so callers that caught those keep working.
"""


class ClipGPTError(Exception):
    """Something the user can fix: bad input, a missing file, an unreachable server."""
