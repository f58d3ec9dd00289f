"""RemoteIndex against a real clip-retrieval back-end (clipgpt serve, i.e. python -m clipgpt_core.retrieval.serve) on loopback."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipgpt_core.bundle import load_bundle
from clipgpt_core.retrieval.local import build_world_gallery
from clipgpt_core.retrieval.remote import RemoteError, RemoteIndex
from benchmarks.bench_start import free_port

ROOT = Path(__file__).resolve().parents[1]
NAME = "shapes"


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("remote")
    clip = load_bundle().clip             # the built-in CLIP, served by clip back from a saved copy
    clip.save(tmp / "clip")
    index_dir = build_world_gallery(clip, tmp / "gallery", n=60, seed=0, progress=False)
    return clip, tmp, index_dir


@pytest.fixture(scope="module")
def server(gallery):
    _, tmp, index_dir = gallery
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp / "back.log", "w")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen([sys.executable, "-m", "clipgpt_core.retrieval.serve", "--index", f"{NAME}={index_dir}",
                             "--clip-dir", str(tmp / "clip"), "--port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"clip back exited ({proc.returncode}):\n{(tmp / 'back.log').read_text()[-3000:]}")
            try:
                RemoteIndex(url, NAME, timeout=2).indices()
                break
            except RemoteError:
                if time.monotonic() > deadline:
                    pytest.fail(f"clip back not ready in 90 s:\n{(tmp / 'back.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_indices_lists_the_served_name(server):
    assert RemoteIndex(server, NAME).indices() == [NAME]
    assert RemoteIndex(server + "/knn-service", NAME).indices() == [NAME]   # endpoint URL accepted too


def test_embedding_of_an_indexed_image_finds_itself(server, gallery):
    _, tmp, _ = gallery
    emb = np.load(tmp / "gallery" / "embeddings" / "img_emb" / "img_emb_0.npy").astype(np.float32)
    sims = emb @ emb.T
    np.fill_diagonal(sims, -1)
    i = int(np.argmin(sims.max(axis=1)))    # an image with no near-duplicate in the gallery
    hits = RemoteIndex(server, NAME).search(embedding=emb[i] * 3.0, k=5)   # unnormalised on purpose
    assert len(hits) == 5
    assert hits[0].id == i
    assert hits[0].similarity == pytest.approx(1.0, abs=2e-3)
    assert hits[0].image_path.endswith(f"{i:06d}.png")
    assert isinstance(hits[0].image, Image.Image)
    assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)


def test_text_and_image_queries(server, gallery):
    clip, tmp, _ = gallery
    remote = RemoteIndex(server, NAME)
    for hits in (remote.search(text="a small red circle on a blue background", k=7),
                 remote.search(image=Image.open(tmp / "gallery" / "images" / "000003.png"), k=7),
                 remote.search(text="a red circle", k=4, modality="text")):
        assert 0 < len(hits) <= 7 and len({h.id for h in hits}) == len(hits)
        assert all(h.caption for h in hits)
        assert all(isinstance(h.image, Image.Image) for h in hits)
    assert len(remote.search(text="a red circle", k=7)) == 7
    # the server encodes an image query as we do locally
    local = clip.encode_images([tmp / "gallery" / "images" / "000003.png"])[0]
    remote_hit = remote.search(image=tmp / "gallery" / "images" / "000003.png", k=1)[0]
    emb = np.load(tmp / "gallery" / "embeddings" / "img_emb" / "img_emb_0.npy").astype(np.float32)
    assert remote_hit.similarity == pytest.approx(float((emb @ local).max()), abs=2e-3)


def test_unknown_index_names_the_served_ones(server):
    with pytest.raises(RemoteError, match=f"no index named 'laion5B'.*serves: {NAME}"):
        RemoteIndex(server, "laion5B").search(text="a red circle")


def test_server_error_is_reported(server):
    with pytest.raises(RemoteError, match="HTTP 500"):
        RemoteIndex(server, NAME).search(embedding=np.ones(3), k=3)   # wrong dimension


def test_bad_arguments_fail_before_the_network(server):
    remote = RemoteIndex(server, NAME)
    with pytest.raises(ValueError):
        remote.search(text="a", embedding=np.ones(3))
    with pytest.raises(ValueError):
        remote.search()


def test_unreachable_url_fails_fast():
    url = f"http://127.0.0.1:{free_port()}"   # nothing listens there
    t = time.monotonic()
    with pytest.raises(RemoteError, match="(?s)Could not reach.*clipgpt serve"):
        RemoteIndex(url, NAME).search(text="a red circle")
    assert time.monotonic() - t < 5


@pytest.fixture
def plain_http_server():
    """A web server that is not clip back: HTML pages under /html/, 404 elsewhere."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path.startswith("/html/")
            body = b"<html><body>hello</body></html>" if ok else b"<html><body>Not Found</body></html>"
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.do_GET()

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_not_a_clip_back_server(plain_http_server):
    with pytest.raises(RemoteError, match="HTTP 404.*not a clip-retrieval back-end"):
        RemoteIndex(plain_http_server, NAME).indices()              # 404
    with pytest.raises(RemoteError, match="text/html, not JSON.*not a clip-retrieval back-end"):
        RemoteIndex(plain_http_server + "/html", NAME).search(text="a red circle")   # 200, HTML


@pytest.mark.parametrize("url", ["", "localhost:1234", "127.0.0.1", "ftp://127.0.0.1:1234",
                                 "http://", "http://127.0.0.1:notaport"])
def test_malformed_url(url):
    with pytest.raises(RemoteError):
        RemoteIndex(url, NAME)


def test_the_app_tab_searches_the_back_end(server, gallery, tmp_path):
    """The Nearest-images tab's own code path, through the launched app's API, against clip back."""
    from gradio_client import Client, handle_file

    from clipgpt_app import main as app
    from clipgpt_core.bundle import Bundle
    clip, _, _ = gallery
    demo = app.build_demo(Bundle("remote-test", clip), progress=False)   # no built-in gallery
    _, url, _ = demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1")
    try:
        client = Client(url, verbose=False)
        remote = dict(text_weight=0.5, k=5, source="Remote clip-retrieval back-end", folder="",
                      url=server, indice_name=NAME, api_name="/search")
        items, status = client.predict(text="a red circle", image=None, **remote)
        assert len(items) == 5 and f"{NAME} at {server}" in status
        assert all(" · " in item["caption"] for item in items)
        query = tmp_path / "q.png"
        Image.open(ROOT / "assets" / "examples" / "example_0.png").save(query)
        items, _ = client.predict(text="", image=handle_file(str(query)), **remote)
        assert len(items) == 5
        with pytest.raises(Exception, match="not served|serves"):
            client.predict(text="a red circle", image=None, **(remote | {"indice_name": "nope"}))
    finally:
        demo.close()
