"""The app end to end: launched on loopback, called through its API with gradio_client."""
import importlib.util
import io
import sys
import time

import httpx
import pytest
from conftest import launched_app
from gradio_client import handle_file
from PIL import Image

from clipgpt_core import world

SEARCH = dict(text_weight=0.5, k=4, source="Built-in gallery", folder="", url="", indice_name="shapes", text_mode="raw")


HAS_MCP = importlib.util.find_spec("mcp") is not None     # Gradio's `mcp` extra (requirements.txt pins it)


@pytest.fixture(scope="module")
def client(bundle):
    with launched_app(bundle, launch={"mcp_server": True} if HAS_MCP else None) as client:   # as `app.py --mcp`
        yield client


def test_every_event_has_an_api_name(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/search", "/index_folder", "/zero_shot", "/sample", "/score", "/caption", "/render"} <= names
    # the same functions under a second trigger (Enter in a textbox) stay callable but off the API page
    assert not names & {"/search_submit", "/sample_submit", "/render_submit"}
    rows = client.predict(1, 0, 0, 1.0, "a red", 0, api_name="/sample_submit")   # positional: not documented
    assert rows["data"][0][0].startswith("a red")


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
    _, three = client.predict(handle_file(str(path)), 3, 2, 1.0, 0, 3, api_name="/caption")
    assert three["data"] == table["data"][:3]                     # the best 3: the first 3 of the default 10
    with pytest.raises(Exception, match="Upload an image"):
        client.predict(None, 3, 0, 1.0, 0, api_name="/caption")


@pytest.fixture(scope="module")
def bad_uploads(tmp_path_factory):
    """name -> (file, what its message must say): each kind of broken upload the app must answer clearly."""
    folder = tmp_path_factory.mktemp("bad_uploads")
    good = io.BytesIO()
    world.example(3).image.save(good, format="PNG")
    jpeg = io.BytesIO()
    world.example(3).image.save(jpeg, format="JPEG")
    files = {"corrupt.png": (b"\x89PNG\r\n\x1a\n not really a png", "Not an image"),
             "truncated.png": (good.getvalue()[: len(good.getvalue()) // 2], "[Tt]runcated"),
             "truncated.jpg": (jpeg.getvalue()[: len(jpeg.getvalue()) // 2], "[Tt]runcated"),
             "empty.png": (b"", "empty"),
             "notes.png": (b"shopping list: eggs, milk\n", "Not an image")}
    out = {}
    for name, (data, message) in files.items():
        (folder / name).write_bytes(data)
        out[name] = (folder / name, message)
    Image.new("1", (20_000, 20_000)).save(folder / "bomb.png")     # 400 megapixels in a 48 kB file
    out["bomb.png"] = (folder / "bomb.png", "megapixels")
    return out


CALLS = {"/caption": lambda c, f: c.predict(f, 1, 0, 1.0, 0, api_name="/caption"),
         "/search": lambda c, f: c.predict(text="", image=f, api_name="/search", **SEARCH),
         "/search_submit": lambda c, f: c.predict("a red circle", f, *SEARCH.values(), api_name="/search_submit"),
         "/zero_shot": lambda c, f: c.predict(f, api_name="/zero_shot")}


@pytest.mark.parametrize("endpoint", list(CALLS))
def test_broken_uploads_get_the_cores_message(client, bad_uploads, endpoint):
    """Uploads reach the core as files, so its BadImageError answers, not Gradio's "could not preprocess"."""
    for name, (path, message) in bad_uploads.items():
        with pytest.raises(Exception, match=message) as e:
            CALLS[endpoint](client, handle_file(str(path)))
        assert "preprocess" not in str(e.value), (name, str(e.value))
    gallery, _ = client.predict(text="a blue square", image=None, api_name="/search", **SEARCH)
    assert len(gallery) == 4                        # and the app is still up


def test_odd_modes_reach_every_endpoint(client, tmp_path):
    for mode in ("I;16", "P", "LA", "1"):
        path = tmp_path / f"{mode.replace(';', '')}.png"
        world.example(5).image.convert("L" if mode == "I;16" else mode).convert(mode).save(path)
        _best, table = CALLS["/caption"](client, handle_file(str(path)))
        assert table["data"]
        gallery, _ = CALLS["/search"](client, handle_file(str(path)))
        assert len(gallery) == 4


@pytest.mark.skipif(not HAS_MCP, reason="Gradio's mcp extra is not installed: pip install 'gradio[mcp]'")
def test_mcp_tools_are_the_documented_functions(client):
    tools = {t["meta"]["endpoint_name"]: t for t in
             httpx.get(client.src.rstrip("/") + "/gradio_api/mcp/schema", timeout=30).json()}
    assert {"search", "caption", "explain", "render", "zero_shot", "sample"} <= set(tools)
    assert not {"search_submit", "sample_submit", "render_submit"} & set(tools)      # no twin tools
    assert "nearest to a text query" in tools["search"]["description"]
    props = tools["caption"]["inputSchema"]["properties"]
    assert "beam-search width" in props["num_beams"]["description"]       # from the docstring's Args


def test_mcp_flag_without_the_extra_says_how(monkeypatch, capsys):
    from clipgpt_app import main as app
    monkeypatch.setitem(sys.modules, "mcp", None)          # as if `gradio[mcp]` were not installed
    with pytest.raises(SystemExit):
        app.main(["--mcp"])
    assert "pip install 'gradio[mcp]" in capsys.readouterr().err
