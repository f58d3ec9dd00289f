"""Seed 000's clip_gpt.pt -> the project's prior: stand-ins pickled by the published class itself
(benchmarks/published_code/clip_gpt, OpenAI CLIP's clip.model tower), read without running anything from the file,
checked against the published forward and generate()."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from benchmarks.published_code import standins

from clipgpt_core.errors import BundleError
from clipgpt_core.models.caption_prior import CaptionPrior, generate
from clipgpt_core.published.clip_gpt import convert_clip_gpt
from clipgpt_core.published.unpickle import UnsafePickle

TEXTS = ["a dog on a beach", "a cat", "2 0 1 5 toyota corolla le for sale in fort myers , fl", "mini - learn - to"]


def published_log_probs(model, tokens: torch.Tensor) -> torch.Tensor:
    """The published forward (padded to 77 with id 0, as its generate() does) -> log p of each next token."""
    with torch.no_grad():
        logits = model(F.pad(tokens, (0, 77 - tokens.shape[1])))[:, :tokens.shape[1] - 1].float()
    return logits.log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """(the published CLIPGPT module, its clip_gpt.pt, the converted prior)"""
    tmp = tmp_path_factory.mktemp("clip_gpt")
    path = standins.clip_gpt_file(tmp / "clip_gpt.pt", width=64, layers=2, heads=2)
    prior = CaptionPrior.load(convert_clip_gpt(path, tmp / "prior"))
    return standins.clip_gpt_model(64, 2, 2), path, prior


def test_log_probs_equal_the_published_forward(published):
    model, _, prior = published
    assert (prior.cfg.width, prior.cfg.heads, prior.cfg.layers, prior.cfg.context_length) == (64, 2, 2, 77)
    assert prior.cfg.heads != 64 // 64          # heads came from the pickled attention module, not width / 64
    tokens = prior.token_batch(TEXTS)           # several lengths in one batch
    ref = published_log_probs(model, tokens)
    ours = prior.token_log_probs(TEXTS)
    for i, lp in enumerate(ours):
        torch.testing.assert_close(torch.from_numpy(lp), ref[i, :len(lp)], atol=1e-5, rtol=0)
    assert prior.log_prob(TEXTS[:1])[0] == pytest.approx(float(ref[0, :len(ours[0])].sum()), abs=1e-4)


def test_greedy_text_equals_the_published_generate(published):
    model, _, prior = published
    tok = standins.published_clip_gpt().tokenizer
    for prompt in ["", "a dog"]:
        ids = [49406] + tok.encode(prompt)
        ours = generate(prior.gpt, torch.tensor([ids]), temperature=0)[0]          # KV cache, stops at 49407
        # the published loop: a full 77-token forward per token, argmax (temp 0 -> logits / 1e-5)
        batch = torch.tensor([ids])
        for _ in range(78 - 2 * len(ids)):          # its range(L-1, min(77-L, 77)): 78 - 2L tokens at most
            with torch.no_grad():
                nxt = model(F.pad(batch, (0, 77 - batch.shape[1])))[:, batch.shape[1] - 1].argmax(-1)
            batch = torch.cat([batch, nxt[:, None]], 1)
            if nxt.item() == 49407:
                break
        theirs = batch[0, len(ids):].tolist()
        assert ours[:len(theirs)] == [t for t in theirs if t != 49407]
        # and its own generate(): the same tokens, less the last one (it drops it, end-of-text or not)
        torch.manual_seed(0)
        assert model.generate(prompt, temp=0) == tok.decode(batch[0, 1:-1].tolist())
        # served as the project serves priors: cached and uncached decoding agree
        assert prior.sample(2, temperature=0.8, seed=1, prefix=prompt) == \
            prior.sample(2, temperature=0.8, seed=1, prefix=prompt, use_cache=False)


def test_any_dtype_and_width(tmp_path):
    half = standins.clip_gpt_file(tmp_path / "half.pt", width=128, layers=1, heads=2, dtype=torch.float16)
    prior = CaptionPrior.load(convert_clip_gpt(half, tmp_path / "half"))
    assert (prior.cfg.width, prior.cfg.heads) == (128, 2)
    from safetensors import safe_open
    with safe_open(tmp_path / "half" / "model.safetensors", "pt") as f:
        assert f.get_tensor("lm_head.weight").dtype == torch.float16      # stored in the file's own dtype
    model = standins.clip_gpt_model(128, 1, 2).half().float()
    tokens = prior.token_batch(TEXTS[:2])
    ref = published_log_probs(model, tokens)
    torch.testing.assert_close(torch.from_numpy(prior.token_log_probs(TEXTS[:1])[0]), ref[0, :tokens[0].ne(0).sum() - 1],
                               atol=1e-4, rtol=0)
    # a state dict of the same keys (no heads in it: CLIP's width / 64)
    state = standins.clip_gpt_model(128, 1, 2).state_dict()
    torch.save(state, tmp_path / "state.pt")
    assert CaptionPrior.load(convert_clip_gpt(tmp_path / "state.pt", tmp_path / "s")).cfg.heads == 2


def test_a_training_scripts_main_module_path_loads(tmp_path, monkeypatch):
    module = standins.published_clip_gpt()
    main = sys.modules["__main__"]
    monkeypatch.setattr(module.CLIPGPT, "__module__", "__main__")
    monkeypatch.setattr(main, "CLIPGPT", module.CLIPGPT, raising=False)
    path = tmp_path / "main.pt"
    torch.save(standins.clip_gpt_model(64, 1, 1), path)
    assert b"__main__" in path.read_bytes()
    assert CaptionPrior.load(convert_clip_gpt(path, tmp_path / "p")).cfg.layers == 1


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_booby_trapped_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    for i, payload in enumerate([Payload(marker), (eval, ("1",))]):
        bad = tmp_path / f"bad{i}.pt"
        if isinstance(payload, tuple):     # a module holding a callable global: refused at find_class
            torch.save({"token_embedding.weight": torch.zeros(2, 2), "f": payload[0]}, bad)
        else:
            model = standins.clip_gpt_model(64, 1, 1)
            model.__dict__["extra"] = payload          # inside the module's own state
            torch.save(model, bad)
        with pytest.raises(UnsafePickle, match="(system|eval).*refused and nothing from the file ran"):
            convert_clip_gpt(bad, tmp_path / "out")
        assert not marker.exists()
        assert not (tmp_path / "out").exists()


def test_wrong_files_get_a_message_naming_what_was_expected(tmp_path, published):
    _, good, _ = published
    cases = {}
    (tmp_path / "trunc.pt").write_bytes(good.read_bytes()[:5000])
    cases["trunc.pt"] = "could not be read as a PyTorch checkpoint"
    torch.save(standins.openai_clip().state_dict(), tmp_path / "clip.pt")
    cases["clip.pt"] = "image tower.*CLIP checkpoint, not CLIP GPT"
    torch.save(standins.openai_clip().transformer.state_dict(), tmp_path / "tower.pt")
    cases["tower.pt"] = "not a CLIP GPT checkpoint"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "ts.pt")
    cases["ts.pt"] = "TorchScript archive"
    (tmp_path / "text.pt").write_text("hello")
    cases["text.pt"] = "could not be read"
    for name, message in cases.items():
        with pytest.raises(BundleError, match=message):
            convert_clip_gpt(tmp_path / name, tmp_path / "out")
    # the command says so in one line, without a traceback
    run = subprocess.run([sys.executable, "-m", "clipgpt_app", "convert", "clip-gpt", str(tmp_path / "clip.pt"),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert run.returncode != 0 and "CLIP checkpoint, not CLIP GPT" in run.stderr and "Traceback" not in run.stderr
