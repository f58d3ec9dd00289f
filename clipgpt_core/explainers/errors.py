"""The errors explain raises on purpose: bad options, inputs or files the user can fix."""
from ..errors import ClipGPTError


class ExplainError(ClipGPTError, ValueError):
    """A misspelled option, an unusable input or a saved explanation that cannot be read."""


class TargetError(ClipGPTError, ValueError):
    """Scores or images that cannot be explained; the message says what is wrong."""
