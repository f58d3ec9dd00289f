"""Nearest images: embedding folders (embed.py, clip-retrieval inference), local indices (local.py, the
layout clip-retrieval and autofaiss write), remote back-ends (remote.py), the search (nearest.py) and a
clip-retrieval back-end with our CLIP (serve.py)."""
