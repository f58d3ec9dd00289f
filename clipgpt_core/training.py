"""Temporary: clipgpt_core.explain still imports world_captions from here. The data streams moved to
clipgpt_core.corpus and the trainers to clipgpt_train; delete this file once the Explain split imports
`from .corpus import world_captions` (clipgpt_core/explain.py, tests/test_explain.py)."""
from .corpus import world_captions  # noqa: F401
