"""Batch jobs run from a shell: caption a folder (caption_folder.py) and explain scores (explain.py)."""
