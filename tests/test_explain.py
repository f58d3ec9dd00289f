"""Explain: every method recovers a planted function, the monotone fit, learned-token files (and a tiny
renderer), targets, bad input, and the Explain tab through gradio_client."""
import importlib.util

import numpy as np
from scipy.stats import rankdata
import pytest
from conftest import launched_app
import torch
from gradio_client import handle_file
from scipy.stats import spearmanr

from clipgpt_core import explain, world
from clipgpt_core.explainers import (TextTower, explainer_for, load_learned_embeds, monotone_fit, spearman_ceiling,
                                  spearman_columns, standardise)
from clipgpt_core.explainers.planted import PLANTED, world_sample
from clipgpt_core.explainers.targets import ClassifierTarget, ModelUnit
from clipgpt_core.explainers.errors import TargetError
from clipgpt_core.explainers.scores import check_scores, scores_from_csv, scores_from_folders
from clipgpt_core.models.classifier import load_classifier
from clipgpt_core.world.captions import stated_values, states_answer

N = 256                  # dissect (the baseline) needs about this many to find "red" reliably
BUDGET = {"search": 2, "dissect": 0, "inversion": 60, "gumbel": 30, "rl": 25}


@pytest.fixture(scope="module")
def sample(bundle):
    images, scenes = world_sample(N)
    return images, scenes, bundle.clip.encode_images(images)


@pytest.mark.parametrize("method", ["search", "dissect", "inversion", "gumbel", "rl"])
def test_each_method_recovers_a_planted_function(bundle, sample, method, tmp_path):
    images, scenes, emb = sample
    planted = PLANTED["has_red"]
    f = planted.score(scenes, images)
    shared = [*bundle.prior.gpt.parameters(), *bundle.clip.model.parameters()]
    for w in shared:
        w.grad = None
    ranked = explain(bundle, emb, f, method=method, budget=BUDGET[method], progress=False, out_dir=tmp_path)
    assert all(w.grad is None for w in shared)        # the bundle's models are shared by every user: never trained
    best = ranked[0]
    assert states_answer(best.text, {"colour": "red"}), [e.text for e in ranked[:3]]
    assert best.method == method and best.seconds > 0 and best.log_prior < 0
    assert -1 <= best.spearman <= 1 and best.r2 <= 1
    if method != "dissect":                           # the baseline ranks by SoftWPMI, not by fit
        assert best.spearman > 0.3
    if method == "inversion":
        assert best.token_file and best.token.startswith("<")
    if method == "rl":                                # the policy learned: its groups' mean reward rose
        curve = best.extra["reward_curve"]
        assert len(curve) == BUDGET["rl"] and np.mean(curve[-5:]) > np.mean(curve[:5]) + 0.1, curve


def test_rl_leaves_the_prior_untouched_and_is_seeded(bundle, sample):
    """The policy is a copy: the bundle's prior samples the same afterwards; the same seed, the same answer."""
    images, scenes, emb = sample
    f = PLANTED["has_blue"].score(scenes, images)
    before = {k: v.clone() for k, v in bundle.prior.gpt.state_dict().items()}
    grads = [None if w.grad is None else w.grad.clone() for w in bundle.prior.gpt.parameters()]
    a = explain(bundle, emb, f, method="rl", budget=6, progress=False, seed=3)
    assert all(torch.equal(before[k], v) for k, v in bundle.prior.gpt.state_dict().items())
    assert all((g is None and w.grad is None) or torch.equal(g, w.grad)             # no gradient reached it
               for g, w in zip(grads, bundle.prior.gpt.parameters()))
    b = explain(bundle, emb, f, method="rl", budget=6, progress=False, seed=3)
    assert [e.text for e in a] == [e.text for e in b] and a[0].extra["reward_curve"] == b[0].extra["reward_curve"]


def test_images_or_embeddings_give_the_same_answer(bundle, sample):
    images, scenes, emb = sample
    f = PLANTED["white_background"].score(scenes, images)
    a = explain(bundle, images[:64], f[:64], method="dissect", progress=False)
    b = explain(bundle, emb[:64], f[:64], method="dissect", progress=False)
    assert [e.text for e in a] == [e.text for e in b]
    assert a[0].spearman == pytest.approx(b[0].spearman, abs=1e-6)


def test_centred_similarity_removes_the_shared_caption_component(bundle, sample):
    """CLIP_t = cos(image, t) - cos(image, generic caption): "a red circle" then ranks images by redness,
    where raw cosine mostly ranks them by how few objects they hold."""
    images, scenes, emb = sample
    f = PLANTED["has_red"].score(scenes, images)
    ex = explainer_for(bundle)
    assert np.linalg.norm(ex.centre) == pytest.approx(1.0, abs=1e-5)
    t = ex.features([ex.ids("a red circle")])
    p = ex.problem(emb, f, seed=0)
    assert np.allclose(p.sims(t)[:, 0], emb @ t[0] - emb @ ex.centre, atol=1e-5)
    raw = ex.problem(emb, f, seed=0, centre=False)
    assert np.allclose(raw.sims(t)[:, 0], emb @ t[0], atol=1e-6)
    rho = {c: spearmanr(f, q.sims(t)[:, 0])[0] for c, q in (("centred", p), ("raw", raw))}
    assert rho["centred"] > rho["raw"] + 0.15 and rho["centred"] > 0.4, rho


def test_auto_centre_picks_the_variant_the_fit_half_prefers(bundle, sample):
    """A colour is explained on the centred CLIP_t; a function of the part every caption shares (how
    crowded the image is) only on raw cosine, which centring removes: "auto" picks each right."""
    images, scenes, emb = sample
    ex = explainer_for(bundle)
    has_red = PLANTED["has_red"].score(scenes, images)
    assert ex.problem(emb, has_red, seed=0, centre="auto").centred
    shared = emb @ ex.centre + np.random.default_rng(0).normal(0, 0.002, len(emb))
    assert not ex.problem(emb, shared, seed=0, centre="auto").centred
    ranked = explain(bundle, emb, shared, method="dissect", progress=False)
    assert ranked[0].extra["centred"] is False
    assert explain(bundle, emb, has_red, method="dissect", progress=False)[0].extra["centred"] is True
    with pytest.raises(ValueError, match="centre must be"):
        ex.problem(emb, has_red, seed=0, centre="sometimes")


def test_monotone_fit_is_monotone():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    f = np.sin(x) + rng.normal(scale=0.5, size=300)
    grid = np.linspace(-4, 4, 200)
    up = monotone_fit(x, f, increasing=True).predict(grid)
    down = monotone_fit(x, -f, increasing=False).predict(grid)
    assert np.all(np.diff(up) >= 0) and np.all(np.diff(down) <= 0)
    assert np.isfinite(up).all()                      # clipped outside the fitted range


def test_spearman_helpers_match_scipy():
    rng = np.random.default_rng(1)
    f = rng.integers(0, 3, size=100).astype(float)    # ties in f
    x = rng.normal(size=(100, 5))
    rho = spearman_columns(standardise(rankdata(f)), x)
    assert np.allclose(rho, [spearmanr(f, x[:, j])[0] for j in range(5)])
    binary = (np.arange(400) < 100).astype(float)     # 25% ones: sqrt(3 p (1-p)) = 0.75
    assert spearman_ceiling(binary) == pytest.approx(0.75, abs=0.01)


def test_text_tower_on_ids_equals_encode_texts(bundle):
    ex = explainer_for(bundle)
    texts = ["a red circle", "two large blue stars on a white background", "red"]
    assert np.abs(ex.features([ex.ids(t) for t in texts]) - bundle.clip.encode_texts(texts)).max() < 1e-5
    lp = ex.space.log_probs([ex.ids("a red circle on a black background")])[0]
    full = bundle.prior.token_log_probs(["a red circle on a black background"])[0].mean()
    assert lp == pytest.approx(full, abs=0.05)        # the restricted vocabulary holds nearly all the mass


def test_the_fluency_floor_parts_captions_from_word_salad(bundle, sample):
    """Every caption the world writes clears the floor; word salad that search once returned does not, and
    ranks after every fluent text (at the default prior_weight, which alone did not stop it)."""
    import random
    from clipgpt_core.explainers import FLUENCY_FLOOR
    from clipgpt_core.world.corpus import world_captions
    ex = explainer_for(bundle)
    captions = world_captions(random.Random(5), 300, split="any")
    assert ex.min_logp([ex.ids(t) for t in captions]).min() > FLUENCY_FLOOR
    salad = ["a large small in the center", "a large the right", "circle red a"]
    assert (ex.min_logp([ex.ids(t) for t in salad]) < FLUENCY_FLOOR).all()
    images, scenes, emb = sample
    p = ex.problem(emb, PLANTED["object_center"].score(scenes, images), seed=0)
    rows = [ex.ids(t) for t in ["a large small in the center", "a small diamond in the center", "a red circle"]]
    ranked = ex.finish(p, rows, "search", 0.01, keep=3)
    assert ranked[-1].text == "a large small in the center" and not ranked[-1].extra["fluent"]
    assert all(e.extra["fluent"] for e in ranked[:2])
    ex.fluency_floor = None                                # off: ranked by fit and prior alone
    try:
        assert all(e.extra["fluent"] for e in ex.finish(p, rows, "search", 0.01, keep=3))
    finally:
        ex.fluency_floor = FLUENCY_FLOOR


def test_token_files_load_back_and_into_a_renderer(bundle, sample, tmp_path):
    images, scenes, emb = sample
    f = PLANTED["number_of_circles"].score(scenes, images)
    best = explain(bundle, emb, f, method="inversion", budget=10, progress=False, out_dir=tmp_path)[0]
    state = load_learned_embeds(best.token_file)
    (token, vectors), = state.items()
    assert token == best.token and vectors.shape == (2, TextTower(bundle.clip).embedding.shape[1])
    if importlib.util.find_spec("clipgpt_core.models.renderer") is None:
        pytest.skip("no clipgpt_core.models.renderer: the Render tab is not in this checkout")
    from clipgpt_core.models.renderer import Renderer
    pipe = tiny_pipeline(bundle)
    renderer = Renderer(pipe)
    assert renderer.load_tokens(best.token_file) == [best.token]
    ids = pipe.tokenizer(pipe.maybe_convert_prompt(best.token, pipe.tokenizer))["input_ids"]   # <t> <t>_1
    rows = pipe.text_encoder.get_input_embeddings().weight[ids[1:-1]]
    assert torch.allclose(rows, vectors)               # diffusers' load_textual_inversion put them in
    assert len(renderer.render([f"a {best.token}"], steps=1)) == 1


def tiny_pipeline(bundle):
    """A StableDiffusionPipeline at tiny random sizes around this bundle's CLIP text tower."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from clipgpt_core.models.hf_text import text_encoder_from_clip, tokenizer_from_clip
    torch.manual_seed(0)
    unet = UNet2DConditionModel(block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=128,
                                norm_num_groups=8, attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder_from_clip(bundle.clip),
                                   tokenizer=tokenizer_from_clip(bundle.clip), unet=unet,
                                   scheduler=PNDMScheduler(skip_prk_steps=True), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


# ----------------------------------------------------------------------------- targets
def test_planted_functions_and_reading_answers(sample):
    images, scenes, _ = sample
    assert len(PLANTED) >= 20 and sum(p.single_attribute for p in PLANTED.values()) >= 20
    for p in PLANTED.values():
        f = p.score(scenes, images)
        assert f.shape == (N,) and np.ptp(f) > 0, p.name           # every planted function varies
    assert states_answer("a red circle", {"colour": "red"})
    assert not states_answer("a red circle and a blue square", {"colour": "red"})
    assert states_answer("red", {"colour": "red"}) and states_answer("on a black background", {"background": "black"})
    assert not states_answer("a black circle", {"background": "black"})
    assert stated_values("two large stars in the top left")["shape"] == {"star"}
    assert states_answer("a star in the top right", {"shape": "star", "position": ("top left", "top", "top right")})
    with pytest.raises(TargetError, match="ground truth"):
        PLANTED["has_star"].score(None, images)
    assert PLANTED["area_of_red"].score(None, images[:4]).shape == (4,)   # pixels only


def test_classifier_and_any_torch_model(sample):
    images, _, _ = sample
    clf = load_classifier()
    if clf is None:
        pytest.skip("no shipped classifier (python -m clipgpt_train.classifier)")
    outputs = ClassifierTarget.outputs(clf)
    assert "shape:circle" in outputs and "colour:red" in outputs and "unit 0" in outputs
    logit = ClassifierTarget(clf, "colour:red").score(images[:16])
    unit = ClassifierTarget(clf, "unit 3").score(images[:16])
    assert logit.shape == unit.shape == (16,) and ClassifierTarget(clf, "colour:red").answer == {"colour": "red"}
    with pytest.raises(TargetError, match="no output"):
        ClassifierTarget(clf, "shape:hexagon")
    import torchvision
    resnet = torchvision.models.resnet18(weights=None)
    a = ModelUnit(resnet, "layer3.1.conv2", 5).score(images[:4])
    assert a.shape == (4,) and np.isfinite(a).all()
    with pytest.raises(TargetError, match="no layer"):
        ModelUnit(resnet, "layer9", 0)
    with pytest.raises(TargetError, match="units"):
        ModelUnit(resnet, "fc", 5000).score(images[:2])


def test_bad_input_gets_clear_messages(bundle, sample, tmp_path):
    images, _, emb = sample
    with pytest.raises(TargetError, match="constant"):
        explain(bundle, emb[:20], np.ones(20), progress=False)
    with pytest.raises(TargetError, match="NaN"):
        explain(bundle, emb[:20], np.r_[np.arange(19.0), np.nan], progress=False)
    with pytest.raises(TargetError, match="at least"):
        explain(bundle, images[:1], [1.0], progress=False)
    with pytest.raises(TargetError, match="one score per image"):
        explain(bundle, images[:10], np.arange(12.0), progress=False)
    with pytest.raises(ValueError, match="Unknown method"):
        explain(bundle, emb[:20], np.arange(20.0), method="magic", progress=False)
    with pytest.raises(TargetError, match="numbers"):
        check_scores(["a", "b"])
    # the user's files
    for i in range(10):
        images[i].save(tmp_path / f"{i}.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    good = "\n".join(f"{i}.png,{i}" for i in range(10))
    (tmp_path / "ok.csv").write_text("path,score\n" + good)
    paths, f = scores_from_csv(tmp_path / "ok.csv")
    assert len(paths) == 10 and list(f) == list(range(10))
    cases = {"missing.csv": (good + "\nnope.png,3", "no image file"),
             "corrupt.csv": (good + "\nbroken.png,3", "cannot read"),
             "text.csv": (good + "\n1.png,high", "not a number"),
             "short.csv": ("0.png,1\n1.png,2", "at least")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(TargetError, match=message):
            scores_from_csv(tmp_path / name)
    with pytest.raises(TargetError, match="No CSV"):
        scores_from_csv(tmp_path / "absent.csv")
    with pytest.raises(TargetError, match="not a folder"):
        scores_from_folders(tmp_path / "nope", tmp_path)
    pos = [tmp_path / f"{i}.png" for i in range(5)]
    neg = [tmp_path / f"{i}.png" for i in range(5, 10)]
    paths, f = scores_from_folders(pos, neg)
    assert list(f) == [1] * 5 + [0] * 5


# ----------------------------------------------------------------------------- the tab
EXPLAIN = dict(planted="has_red", clf_output=None, csv_file=None, pos_folder="", neg_folder="", pos_files=None,
               neg_files=None, image_source="Built-in gallery sample", n_images=64, image_folder="", budget=1,
               prior_weight=0.01, seed=0)


@pytest.fixture(scope="module")
def client(bundle):
    with launched_app(bundle) as client:
        yield client


def test_explain_tab(client, tmp_path):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert "/explain" in names and "/explain_render" not in names   # the tab's button: callable, not a tool
    table, status, plot, top, bottom, token_file, saved = client.predict(
        target_kind="Planted function", method="search", api_name="/explain", **EXPLAIN)
    assert len(table["data"]) >= 1 and "ρ" in status and "recovered" in status
    assert len(top) == 8 and len(bottom) == 8 and token_file is None and str(saved).endswith(".json")
    rendered, message = client.predict(handle_file(str(saved)), "Planted function", None,
                                       api_name="/explain_render")      # the built-in renderer draws the text
    assert len(rendered) == 4 and "Rendered" in message
    # inversion: a token file to download, and its learned token through the renderer
    out = client.predict(target_kind="Planted function", method="inversion", api_name="/explain",
                         **(EXPLAIN | {"budget": 5}))
    assert out[-2] and str(out[-2]).endswith(".safetensors")
    rendered, message = client.predict(handle_file(str(out[-1])), "Planted function", None, api_name="/explain_render")
    assert len(rendered) == 4 and "<f-" in message
    # a function of pixels: the render button also checks f on renders of the explanation
    out = client.predict(target_kind="Classifier output", method="dissect", api_name="/explain",
                         **(EXPLAIN | {"clf_output": "colour:red"}))
    rendered, message = client.predict(handle_file(str(out[-1])), "Classifier output", "colour:red",
                                       api_name="/explain_render")
    assert len(rendered) == 8 and "render check: AUC" in message and "colour:red" in message
    # the user's scores as a CSV
    for i in range(12):
        world.example(i).image.save(tmp_path / f"{i}.png")
    (tmp_path / "s.csv").write_text("\n".join(f"{tmp_path / f'{i}.png'},{i % 3}" for i in range(12)))
    table, status, *_ = client.predict(target_kind="My scores (CSV)", method="dissect", api_name="/explain",
                                       **(EXPLAIN | {"csv_file": handle_file(str(tmp_path / "s.csv"))}))
    assert len(table["data"]) >= 1
    # raw cosine instead of the centred CLIP_t: the same dissect ranking, other held-out figures
    runs = [client.predict(target_kind="Planted function", method="dissect", api_name="/explain",
                           **(EXPLAIN | {"centre": c}))[1] for c in ("centred", "raw cosine", "auto")]
    assert runs[0] != runs[1] and all("ρ" in r for r in runs)
    assert "CLIP_t centred" in runs[0] and "CLIP_t raw cosine" in runs[1] and "CLIP_t centred" in runs[2]


def test_explain_tab_bad_input_and_the_app_stays_up(client, tmp_path):
    (tmp_path / "c.csv").write_text("\n".join(f"{tmp_path}/x{i}.png,1" for i in range(12)))
    with pytest.raises(Exception, match="no image file"):
        client.predict(target_kind="My scores (CSV)", method="search", api_name="/explain",
                       **(EXPLAIN | {"csv_file": handle_file(str(tmp_path / "c.csv"))}))
    with pytest.raises(Exception, match="not a folder"):
        client.predict(target_kind="Positives vs negatives", method="search", api_name="/explain",
                       **(EXPLAIN | {"pos_folder": "/definitely/not/here", "neg_folder": str(tmp_path)}))
    with pytest.raises(Exception, match="Upload a CSV"):
        client.predict(target_kind="My scores (CSV)", method="search", api_name="/explain", **EXPLAIN)
    table, *_ = client.predict(target_kind="Planted function", method="dissect", api_name="/explain", **EXPLAIN)
    assert len(table["data"]) >= 1


def test_explain_tab_partial_apply_and_layer(client, bundle, tmp_path):
    """The v2 tab: partial descriptions with the probe beside them, a saved explanation applied to a folder
    it never saw, and a whole classifier layer as a table with CSV / JSON downloads."""
    table, status, *_, saved = client.predict(target_kind="Planted function", method="partial", api_name="/explain",
                                              **EXPLAIN)
    assert table["headers"][:5] == ["explanation", "held-out ρ(f, h(CLIP_t))", "held-out ρ(f, CLIP_t)", "held-out R²",
                                    "ridge probe ρ (same labels)"]
    assert "ridge probe" in status and "recovered" in status
    folder = tmp_path / "new"
    folder.mkdir()
    for i in range(10):
        world.example(10_000 + i).image.save(folder / f"{i}.png")
    rows, gallery, message = client.predict(handle_file(str(saved)), str(folder), None, api_name="/explain_apply")
    assert len(rows["data"]) == 10 and len(gallery) == 8 and "applied to 10 images" in message
    predicted = [r[2] for r in rows["data"]]
    assert predicted == sorted(predicted, reverse=True)
    with pytest.raises(Exception, match="not a folder"):
        client.predict(handle_file(str(saved)), str(tmp_path / "absent"), None, api_name="/explain_apply")
    if load_classifier(bundle) is None:
        pytest.skip("no shipped classifier")
    layer, files, message = client.predict("logits (shape and colour heads)", 64, api_name="/explain_layer")
    assert len(layer["data"]) == 14 and "14 units" in message
    assert sorted(str(f).rsplit(".", 1)[-1] for f in files) == ["csv", "json"]
