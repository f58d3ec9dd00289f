"""The download path for published weights, against real loopback servers: a plain file server (resume, size
checks, one writer at a time) and a small Hub (HF_ENDPOINT) that huggingface_hub downloads from.

huggingface_hub reads HF_HUB_OFFLINE at import and conftest sets it in this process, so Hub downloads run in
subprocesses with their own environment."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clipgpt_core.errors import ClipGPTError
from clipgpt_core.models.clip import WeightsNotAvailable
from clipgpt_core.published import fetch
from hub_server import serve_files, serve_hub

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def online(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("CLIPGPT_OFFLINE", raising=False)
    monkeypatch.setenv("CLIPGPT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def blob(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    data = os.urandom(300_000)
    (folder / "w.pt").write_bytes(data)
    return folder, data


def _gets(url):
    return [r for r in url.requests if r[0] == "GET"]


def test_resume_after_a_broken_download(online, blob, tmp_path):
    folder, data = blob
    dest = tmp_path / "out" / "w.pt"
    with serve_files(folder, drop_after=100_000) as url:
        with pytest.raises(WeightsNotAvailable, match="broke off.*run it again to resume"):
            fetch.url_file(f"{url}/w.pt", dest, size=len(data))
        part = Path(f"{dest}.part")
        assert not dest.exists() and 0 < part.stat().st_size <= 100_000
        kept = part.stat().st_size
        assert fetch.url_file(f"{url}/w.pt", dest, size=len(data)) == dest
        assert dest.read_bytes() == data and not part.exists()
        assert _gets(url) == [("GET", "/w.pt", None), ("GET", "/w.pt", f"bytes={kept}-")]
        # present with the right size: no request at all
        assert fetch.url_file(f"{url}/w.pt", dest, size=len(data)) == dest
        assert len(url.requests) == 2


def test_sha256_and_size_checks(online, blob, tmp_path):
    import hashlib
    folder, data = blob
    with serve_files(folder) as url:
        dest = tmp_path / "out" / "wrong.pt"
        with pytest.raises(WeightsNotAvailable) as e:
            fetch.url_file(f"{url}/w.pt", dest, size=1234)
        assert str(len(data)) in str(e.value) and "1234" in str(e.value)
        assert not dest.exists() and not Path(f"{dest}.part").exists()
        with pytest.raises(WeightsNotAvailable, match="sha256"):
            fetch.url_file(f"{url}/w.pt", dest, sha256="0" * 64)
        assert not dest.exists() and not Path(f"{dest}.part").exists()
        good = fetch.url_file(f"{url}/w.pt", dest, sha256=hashlib.sha256(data).hexdigest())
        assert good.read_bytes() == data
        with pytest.raises(WeightsNotAvailable, match=r"/nope\.pt: HTTP 404"):
            fetch.url_file(f"{url}/nope.pt", tmp_path / "out" / "nope.pt")


def test_unreachable_and_offline(online, tmp_path, monkeypatch):
    import socket
    with socket.socket() as s:        # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/clip_gpt.pt"
    start = time.monotonic()
    with pytest.raises(WeightsNotAvailable, match=f"cannot reach {url}"):
        fetch.url_file(url, tmp_path / "x.pt")
    assert time.monotonic() - start < 5
    monkeypatch.setenv("CLIPGPT_OFFLINE", "1")
    s3 = fetch.SOURCES["clip-gpt"]
    with pytest.raises(WeightsNotAvailable) as e:
        fetch.fetch("clip-gpt")
    assert "`clipgpt fetch clip-gpt`" in str(e.value) and s3.location in str(e.value) and "curl -L -C -" in str(e.value)
    assert isinstance(e.value, ClipGPTError)


def test_two_processes_one_file(online, tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    data = os.urandom(4_000_000)
    (folder / "big.bin").write_bytes(data)
    dest = tmp_path / "out" / "big.bin"
    code = "import sys; from clipgpt_core.published.fetch import url_file; url_file(sys.argv[1], sys.argv[2])"
    env = dict(os.environ, HF_HUB_OFFLINE="0")
    with serve_files(folder) as url:
        procs = [subprocess.Popen([sys.executable, "-c", code, f"{url}/big.bin", str(dest)], cwd=ROOT, env=env,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        errs = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errs
        assert dest.read_bytes() == data and len(_gets(url)) == 1   # the second waited, then found it whole


def _hub_calls(url: str, hf_home: Path, offline: str, calls: list) -> list:
    """hub_files for each (repo, patterns) in a fresh process: the folder it gave, or the error's message."""
    code = ("import json, sys\nfrom clipgpt_core.published.fetch import hub_files\nout = []\n"
            "for repo, pats in json.loads(sys.argv[1]):\n"
            "    try: out.append(str(hub_files(repo, pats)))\n"
            "    except Exception as e: out.append(f'{type(e).__name__}: {e}')\n"
            "print(json.dumps(out))")
    env = dict(os.environ, HF_ENDPOINT=url, HF_HOME=str(hf_home), HF_HUB_OFFLINE=offline)
    env.pop("HF_HUB_CACHE", None)
    p = subprocess.run([sys.executable, "-c", code, json.dumps(calls)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_hub_download_then_cache(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "unet").mkdir(parents=True)
    files = {"model_index.json": b'{"a": 1}', "unet/config.json": b'{"b": 2}',
             "unet/diffusion_pytorch_model.safetensors": os.urandom(50_000), "big.bin": os.urandom(20_000)}
    for name, data in files.items():
        (repo / name).write_bytes(data)
    hf_home = tmp_path / "hf"
    want = ["model_index.json", "unet/*"]
    with serve_hub({"org/tiny": repo}) as url:
        got, no_repo, no_file = _hub_calls(url, hf_home, "0", [["org/tiny", want], ["org/none", ["x.json"]],
                                                               ["org/tiny", ["absent.bin"]]])
        folder = Path(got)
        assert folder.parent.name == "snapshots" and str(folder).startswith(str(hf_home))
        arrived = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert arrived == set(files) - {"big.bin"}
        assert all((folder / n).read_bytes() == files[n] for n in arrived)
        assert "big.bin" not in " ".join(r[1] for r in url.requests)     # only the asked-for patterns
        assert no_repo.startswith("WeightsNotAvailable: no repo org/none at " + url) and "404" in no_repo
        assert no_file.startswith("WeightsNotAvailable:") and "absent.bin" in no_file
        seen = len(url.requests)
        # offline: found in the cache, with no request
        assert _hub_calls(url, hf_home, "1", [["org/tiny", want]]) == [got]
        assert len(url.requests) == seen
    # offline, cached: in this process too (HF_HOME read at call time)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert fetch.hub_files("org/tiny", ["unet/config.json"]) == folder
    # offline, not in the cache: the message names the commands
    with pytest.raises(WeightsNotAvailable) as e:
        fetch.hub_files("org/tiny", ["big.bin"])
    assert "hf download org/tiny big.bin" in str(e.value) and "HF_HOME" in str(e.value)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(WeightsNotAvailable) as e:
        fetch.fetch("sd15")
    msg = str(e.value)
    assert "`clipgpt fetch sd15`" in msg and "hf download stable-diffusion-v1-5/stable-diffusion-v1-5 --include" in msg


def test_cli_list_and_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIPGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dest = tmp_path / "cache" / "published" / "gpt2"
    fetch.main(["--list"])
    out = capsys.readouterr().out
    assert all(f"{name}:" in out for name in fetch.SOURCES) and "missing" in out and "MIT" in out
    assert str(tmp_path / "cache" / "published" / "clip-gpt" / "clip_gpt.pt") in out
    with pytest.raises(SystemExit) as e:
        fetch.main(["clip-gpt"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("clipgpt fetch:") and err.count("\n") == 1 and "clipgpt fetch clip-gpt" in err
    with pytest.raises(SystemExit) as e:
        fetch.main(["no-such-piece"])
    assert e.value.code == 2 and "no published piece named" in capsys.readouterr().err
    assert not dest.exists()
