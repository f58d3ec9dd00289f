"""Any vision model's units, explained through forward hooks (explainers/units.py): a model whose channel is
built to read red explains as "red" through the API and the `clipgpt explain` command, from a torch.export file;
a TorchScript file gives its outputs and says why its inner layers cannot be read; a class and its safetensors
state dict load; bad requests get clear messages."""
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from clipgpt_app.cli import main as clipgpt
from clipgpt_core import world
from clipgpt_core.explainers import ExplainError, explain_units, layer_activations, load_vision_model
from clipgpt_core.world.captions import states_answer


class ColourNet(nn.Module):
    """conv channel 0 = red less the rest, 1 = blue less the rest (ReLU; on [0, 1] pixels, so the ImageNet
    normalisation it is fed is undone first), then a linear head over both."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406])[:, None, None])
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225])[:, None, None])
        self.conv = nn.Conv2d(3, 2, 1)
        self.act = nn.ReLU()
        self.head = nn.Linear(2, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, -1.5, -1.0], [-1.0, -1.0, 1.0]])[:, :, None, None])
            self.conv.bias.fill_(-0.1)

    def forward(self, x):                                   # (B, 3, H, W), ImageNet-normalised
        a = self.act(self.conv(x * self.std + self.mean))   # (B, 2, H, W)
        return self.head(a.mean((2, 3)))                    # (B, 3)


@pytest.fixture(scope="module")
def images():
    return [world.example(i, split="any").image for i in range(160)]


def test_a_red_channel_explains_as_red(bundle, images):
    table = explain_units(bundle, ColourNet(), "act", images, units=[0, 1], pool="mean")
    assert [r["unit"] for r in table.rows] == ["act:0", "act:1"]
    assert states_answer(table.rows[0]["explanation"], {"colour": "red"}), table.rows[0]
    assert states_answer(table.rows[1]["explanation"], {"colour": "blue"}), table.rows[1]
    assert table.explanations[0].spearman_h > 0.5
    pooled_max = layer_activations(ColourNet(), "act", images[:8], pool="max")
    pooled_mean = layer_activations(ColourNet(), "act", images[:8], pool="mean")
    assert pooled_max.shape == (8, 2) and (pooled_max >= pooled_mean - 1e-9).all()


def test_the_command_explains_an_exported_model(bundle, images, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, im in enumerate(images):
        im.save(folder / f"{i}.png")
    program = torch.export.export(ColourNet().eval(), (torch.rand(2, 3, 224, 224),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "net.pt2")
    clipgpt(["explain", "--model", str(tmp_path / "net.pt2"), "--layer", "act", "--units", "0", "--images",
             str(folder), "--out", str(tmp_path / "units.csv")])
    out = capsys.readouterr().out
    assert "act:0" in out and "red" in out and (tmp_path / "units.csv").read_text().count("\n") == 2
    with pytest.raises(SystemExit) as e:                       # a unit the layer does not have
        clipgpt(["explain", "--model", str(tmp_path / "net.pt2"), "--layer", "act", "--units", "9", "--images",
                 str(folder)])
    assert e.value.code == 2 and "has 2 units" in capsys.readouterr().err


def test_torchscript_and_class_files(bundle, images, tmp_path):
    scripted = torch.jit.script(ColourNet().eval())
    torch.jit.save(scripted, tmp_path / "net.pt")
    model = load_vision_model(tmp_path / "net.pt")
    table = explain_units(bundle, model, "", images[:64])              # its output: 3 logits
    assert len(table.rows) == 3
    with pytest.raises(ExplainError, match="torch.export"):
        explain_units(bundle, model, "act", images[:64])
    save_file(ColourNet().state_dict(), tmp_path / "net.safetensors")
    built = load_vision_model(class_path="test_units:ColourNet", state_dict=tmp_path / "net.safetensors")
    assert torch.equal(built.conv.weight, ColourNet().conv.weight)
    for bad, match in (({"path": tmp_path / "missing.pt2"}, "No model file"),
                       ({"class_path": "test_units"}, "module:Class"),
                       ({"class_path": "no_such_module_x:Net"}, "Cannot build"),
                       ({}, "Give a model file")):
        with pytest.raises(ExplainError, match=match):
            load_vision_model(**bad)
    with pytest.raises(ExplainError, match="no layer"):
        explain_units(bundle, ColourNet(), "nope", images[:16])


def test_the_tab_explains_an_uploaded_model(bundle, tmp_path):
    from gradio_client import handle_file
    from conftest import launched_app
    program = torch.export.export(ColourNet().eval(), (torch.rand(2, 3, 224, 224),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "net.pt2")
    with launched_app(bundle) as client:
        table, files, status = client.predict(model_file=handle_file(str(tmp_path / "net.pt2")), model_layer="act",
                                              model_units="0,1", pool="max", n_layer_images=128,
                                              api_name="/explain_units")
        assert [r[0] for r in table["data"]] == ["act:0", "act:1"] and "max-pooled" in status
        assert "red" in table["data"][0][1] and len(files) == 2
        with pytest.raises(Exception, match="Units are indices"):
            client.predict(model_file=handle_file(str(tmp_path / "net.pt2")), model_layer="act", model_units="red",
                           pool="mean", n_layer_images=128, api_name="/explain_units")


def test_a_second_cnn_trained_for_another_task(bundle, images):
    """benchmarks/cells_cnn.py, trained here at a small size: a CNN that reads where objects are, how many and
    the background. Its background logits explain as their backgrounds (a weighted sum's largest term, as
    bench_explain counts it), and its hidden layer through explain_units."""
    from benchmarks import cells_cnn
    from benchmarks.bench_explain import recovered
    from clipgpt_core.explainers import explain
    torch.set_num_threads(1)
    model = cells_cnn.train(cells_cnn.CellsConfig(n_images=400, epochs=3, hidden=16))
    assert cells_cnn.accuracy(model, images, [world.example(i, split="any").scene for i in range(160)])["background"] > 0.75
    outs = cells_cnn.outputs(model, images)
    assert len(outs) == 9 + 4 + 3 and all(v.shape == (160,) for v in outs.values())
    emb = bundle.clip.encode_images(images)
    for bg in ("white", "black"):
        best = explain(bundle, emb, outs[f"background:{bg}"], method="partial", progress=False)[0]
        assert recovered(best, cells_cnn.answer(f"background:{bg}")), best.text    # a weighted sum: its largest term
    table = explain_units(bundle, model, "penultimate", images)
    assert len(table.rows) == 16 and all(r["explanation"] for r in table.rows)
