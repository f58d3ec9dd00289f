"""Two processes on one cache: the built-in gallery is built once, the second process waits for it, a failed
build is tried again on the next search, and no message a user sees holds a traceback or a server path."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipgpt_core.retrieval import local as index
from clipgpt_core.retrieval.nearest import NearestImages

ROOT = Path(__file__).resolve().parents[1]
SEARCH = """
from clipgpt_core import load_bundle
from clipgpt_core.retrieval.nearest import NearestImages
b = load_bundle()
b.gallery = {"kind": "shapesworld", "size": 64, "seed": 0}
print(len(NearestImages(b, progress=False).search(text="a red circle", k=3)), "hits")
"""


def test_two_processes_started_together_on_an_empty_cache_both_answer(tmp_path):
    env = dict(os.environ, CLIPGPT_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", SEARCH], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "3 hits" in out, err[-2000:]
    galleries = list((tmp_path / "cache" / "galleries").iterdir())
    built = [g for g in galleries if g.is_dir()]
    assert len(built) == 1 and (built[0] / index.READY).is_file()     # one build, finished


def test_a_failed_build_says_so_plainly_and_is_tried_again(bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(index, "DEFAULT_CACHE", tmp_path / "cache")
    monkeypatch.setattr(bundle, "gallery", {"kind": "shapesworld", "size": 60, "seed": 0})
    real_run = subprocess.run
    calls = []

    def failing_once(cmd, *args, stderr=None, **kwargs):
        calls.append(cmd)
        if len(calls) == 1:
            stderr.write('Traceback (most recent call last):\n  File "/srv/secret/x.py"\nFileExistsError: boom\n')
            return subprocess.CompletedProcess(cmd, 1)
        return real_run(cmd, *args, stderr=stderr, **kwargs)

    monkeypatch.setattr(subprocess, "run", failing_once)
    finder = NearestImages(bundle, progress=False)
    with pytest.raises(index.GalleryError) as failed:
        finder.search(text="a red circle", k=2)
    message = str(failed.value)
    assert "tries again" in message and "Traceback" not in message and "/srv" not in message
    assert str(tmp_path) not in message
    assert len(finder.search(text="a red circle", k=2)) == 2 and len(calls) == 2       # the retry built it
