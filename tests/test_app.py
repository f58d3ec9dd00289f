"""The app end to end: launched on loopback, called through its API with gradio_client."""
import time

import pytest
from conftest import launched_app
from gradio_client import handle_file
from PIL import Image

from clipgpt_core import world

SEARCH = dict(text_weight=0.5, k=4, source="Built-in gallery", folder="", url="", indice_name="shapes", text_mode="raw")


@pytest.fixture(scope="module")
def client(bundle):
    with launched_app(bundle) as client:
        yield client


def test_every_event_has_an_api_name(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/search", "/search_submit", "/index_folder", "/zero_shot",
            "/sample", "/sample_submit", "/score", "/caption"} <= names


def test_text_query(client):
    gallery, status = client.predict(text="a large red star on a black background", image=None,
                                     api_name="/search", **SEARCH)
    assert len(gallery) == 4 and "4 nearest images" in status
    sims = [float(item["caption"].split(" · ")[0]) for item in gallery]
    assert sims == sorted(sims, reverse=True)
    assert "star" in gallery[0]["caption"] or "red" in gallery[0]["caption"]


def test_image_query_and_zero_shot(client, tmp_path):
    ex = world.example(20_001, n_objects=1)
    path = tmp_path / "q.png"
    ex.image.save(path)
    gallery, _ = client.predict(text="", image=handle_file(str(path)), api_name="/search", **SEARCH)
    assert len(gallery) == 4
    labels = client.predict(handle_file(str(path)), api_name="/zero_shot")
    assert len(labels) == 5
    assert labels[0]["label"] == ex.scene.objects[0].colour


@pytest.mark.parametrize("mode", ["CMYK", "RGBA", "L"])
def test_odd_image_modes(client, tmp_path, mode):
    path = tmp_path / f"q.{'jpg' if mode == 'CMYK' else 'png'}"
    world.example(7).image.convert(mode).save(path)
    labels = client.predict(handle_file(str(path)), api_name="/zero_shot")
    assert len(labels) == 5


def test_bad_inputs_get_clear_errors_and_the_app_stays_up(client, tmp_path):
    with pytest.raises(Exception, match="Type a text query"):
        client.predict(text="   ", image=None, api_name="/search", **SEARCH)
    huge = tmp_path / "huge.png"
    Image.new("1", (9000, 7000)).save(huge)
    with pytest.raises(Exception, match="megapixels|too large"):
        client.predict(text="", image=handle_file(str(huge)), api_name="/search", **SEARCH)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(Exception):
        client.predict(handle_file(str(broken)), api_name="/zero_shot")
    t0 = time.time()
    with pytest.raises(Exception, match="[Cc]ould not reach"):
        client.predict(text="a red circle", image=None, api_name="/search",
                       **(SEARCH | {"source": "Remote clip-retrieval back-end", "url": "http://127.0.0.1:9"}))
    assert time.time() - t0 < 10
    with pytest.raises(Exception, match="Not a folder"):
        client.predict("/definitely/not/here", api_name="/index_folder")
    gallery, _ = client.predict(text="a blue square", image=None, api_name="/search", **SEARCH)
    assert len(gallery) == 4


def test_text_query_via_the_embedding_prior(client):
    gallery, status = client.predict(text="a large red star on a black background", image=None, api_name="/search",
                                     **(SEARCH | {"text_mode": "via prior"}))
    assert len(gallery) == 4


def test_sample_captions_tab(client):
    out = client.predict(n=6, temperature=1.0, top_k=0, top_p=1.0, prefix="a large", seed=3, api_name="/sample")
    rows = out["data"]
    assert len(rows) >= 1 and all(r[0].startswith("a large") for r in rows)
    logps = [r[1] for r in rows]
    assert logps == sorted(logps, reverse=True) and all(lp < 0 for lp in logps)
    again = client.predict(n=6, temperature=1.0, top_k=0, top_p=1.0, prefix="a large", seed=3, api_name="/sample")
    assert again["data"] == rows                     # a seed reproduces its samples
    scored = client.predict("a red circle\nleft circle the a red", api_name="/score")["data"]
    assert scored[0][1] > scored[1][1]
    with pytest.raises(Exception, match="Type one or more captions"):
        client.predict("   ", api_name="/score")
    with pytest.raises(Exception, match="too long"):
        client.predict(n=2, temperature=1.0, top_k=0, top_p=1.0, prefix="red " * 40, seed=0, api_name="/sample")


def test_caption_tab(client, tmp_path):
    ex = world.example(31, n_objects=1)
    path = tmp_path / "c.png"
    ex.image.save(path)
    best, table = client.predict(handle_file(str(path)), 3, 2, 1.0, 0, api_name="/caption")
    assert "ClipCap" in best and len(table["data"]) >= 3
    sims = [r[1] for r in table["data"]]
    assert sims == sorted(sims, reverse=True)
    with pytest.raises(Exception, match="Upload an image"):
        client.predict(None, 3, 0, 1.0, 0, api_name="/caption")
