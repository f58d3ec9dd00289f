"""Every MCP tool, called as an agent calls it: the `mcp` package's own client over streamable HTTP against the
launched app, each tool with only the arguments it needs (files as data URIs, as MCP clients send them). Gallery
results come back as text whose image URLs the server serves."""
import asyncio
import base64
import io
import re

import httpx
import pytest
import torch

from conftest import launched_app
from clipgpt_app.main import MCP_REQUIRED
from clipgpt_core import world
from clipgpt_core.models.renderer import Renderer

mcp = pytest.importorskip("mcp", reason="Gradio's mcp extra is not installed: pip install 'gradio[mcp]'")
from mcp import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamablehttp_client  # noqa: E402


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def png(seed: int) -> str:
    buf = io.BytesIO()
    world.example(seed).image.save(buf, format="PNG")
    return data_uri(buf.getvalue(), "image/png")


@pytest.fixture(scope="module")
def files(tmp_path_factory, bundle):
    from clipgpt_core.explainers import explain
    from clipgpt_core.explainers.planted import PLANTED, world_sample
    tmp = tmp_path_factory.mktemp("mcp")
    folder = tmp / "images"
    folder.mkdir()
    for i in range(8):
        world.example(100 + i).image.save(folder / f"{i}.png")
    tokens = Renderer.save_tokens(tmp / "learned_embeds.safetensors", {"<mcp-test>": torch.randn(128) * 0.01})
    images, scenes = world_sample(64)
    saved = explain(bundle, images, PLANTED["has_red"].score(scenes, images), method="partial")[0].save(tmp / "e.json")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.ReLU())
    program = torch.export.export(net.eval(), (torch.rand(2, 3, 224, 224),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp / "net.pt2")
    octet = "application/octet-stream"
    return {"folder": str(folder), "tokens": data_uri(tokens.read_bytes(), octet),
            "explanation": data_uri(saved.read_bytes(), "application/json"),
            "model": data_uri((tmp / "net.pt2").read_bytes(), octet)}


def needs(files) -> dict:
    """Each tool -> the only arguments it is given: what it cannot do without."""
    return {"sample": {}, "score": {"text": "a red circle"}, "caption": {"image": png(1)},
            "search": {"text": "a red circle"}, "index_folder": {"folder": files["folder"]},
            "zero_shot": {"image": png(2)}, "render": {"prompt": "a red star left of a blue circle"},
            "variations": {"image": png(3)}, "load_tokens": {"path": files["tokens"]}, "explain": {},
            "explain_apply": {"saved_file": files["explanation"], "folder": files["folder"]},
            "explain_layer": {}, "explain_units": {"model_file": files["model"]},
            "compose_write": {"image_1": png(4)}, "compose_embed": {"text_1": "a large red star"},
            "compose_render": {"image_1": png(5), "text_1": "change the background to white"},
            "decode_image": {"image": png(6)}, "interpolate": {"image_a": png(6), "image_b": png(7)},
            "text_diff": {"image": png(8), "from_text": "a red star", "to_text": "a blue star"},
            "sample_prior": {"prompt": "a red star and a blue circle"}}


def test_every_tool_answers_with_only_what_it_needs(bundle, files):
    calls = needs(files)
    with launched_app(bundle, launch={"mcp_server": True}) as client:
        url = client.src.rstrip("/")

        async def run():
            async with streamablehttp_client(url + "/gradio_api/mcp/") as (read, write, _):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    tools = {t.name: t for t in (await session.list_tools()).tools}
                    assert set(tools) == set(calls), set(tools) ^ set(calls)   # a new tool joins this test
                    for name, tool in tools.items():
                        required = set(tool.inputSchema.get("required", ()))
                        assert tool.description and required == set(MCP_REQUIRED.get(name, ())), (name, required)
                        assert not any("default" in tool.inputSchema["properties"][k] for k in required), name
                        assert set(calls[name]) <= set(tool.inputSchema["properties"]), name
                        missing = [k for k, v in tool.inputSchema["properties"].items() if "default" not in v]
                        assert set(missing) <= set(calls[name]), (name, missing)   # falsy defaults too
                    assert tools["search"].inputSchema["properties"]["folder"]["default"] == ""
                    return {name: await session.call_tool(name, args) for name, args in calls.items()}
        results = asyncio.run(run())
        for name, result in results.items():
            text = " ".join(c.text for c in result.content if c.type == "text")
            assert not result.isError and result.content, (name, text[:500])
        rendered = " ".join(c.text for c in results["render"].content if c.type == "text")
        images = re.findall(r"'url': '(http[^']+)'", rendered)
        assert len(images) >= 4                                   # the gallery's images, each one fetchable
        for name in ("render", "search", "variations"):           # by URL alone: no server file path in a result
            text = " ".join(c.text for c in results[name].content if c.type == "text")
            assert "'path'" not in text, (name, text[:300])
        got = httpx.get(images[0], timeout=30)
        assert got.status_code == 200 and got.headers["content-type"].startswith("image/")
        assert "<mcp-test>" in " ".join(c.text for c in results["load_tokens"].content if c.type == "text")
