"""The root of every error CLIP GPT raises on purpose.

UIs catch `ClipGPTError` and show its message; anything else is a bug and surfaces as one.
Each subclass also derives from the builtin it used to be (ValueError for bad input,
RuntimeError for missing resources), so callers that caught those keep working.
Errors about one area live beside its code (BadImageError in images.py, RemoteError in remote.py, ...);
the two used across the core are here.
"""


class ClipGPTError(Exception):
    """Something the user can fix: bad input, a missing file, an unreachable server."""


class InputError(ClipGPTError, ValueError):
    """A bad argument: empty text, a setting out of range, a query with nothing in it."""


class BundleError(ClipGPTError, RuntimeError):
    """A bundle that cannot be loaded or used; the message says what is wrong and what to do."""
