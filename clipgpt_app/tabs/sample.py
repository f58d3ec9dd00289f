"""The "Sample captions" tab: draw captions from the caption prior, with their log-probabilities."""
from __future__ import annotations

import gradio as gr

from clipgpt_core.errors import ClipGPTError
from clipgpt_app.zerogpu import gpu


def build(bundle) -> None:
    """Lay out the tab inside the current gr.Blocks / gr.Tab. The bundle's prior is read at each event,
    so a bundle still loading (bundle.LoadingBundle) is waited for then, not here."""

    def check_prefix(prefix):
        # the prior answers an over-long prefix with a bare ValueError, which is no longer taken for a message
        from clipgpt_core.models.caption_prior import MAX_PREFIX_CHARS     # imported with the prior: torch, open_clip
        try:
            prior = bundle.prior        # a bundle still loading is waited for; one that failed says why
        except ClipGPTError as e:
            raise gr.Error(str(e)) from e
        ids = prior.encode(" ".join(str(prefix or "").split())[:MAX_PREFIX_CHARS])
        if 1 + len(ids) >= prior.cfg.context_length:
            raise gr.Error(f"The prefix is too long: {1 + len(ids)} tokens, the context holds "
                           f"{prior.cfg.context_length}")

    @gpu("quick")
    def sample(n=8, temperature=1.0, top_k=0, top_p=1.0, prefix="", seed=0):
        """Sample captions from the caption prior (a GPT over CLIP's tokens), most likely first.

        Args:
            n: how many captions, 1 to 64.
            temperature: 0 (greedy) to 2.
            top_k: keep only the k most likely tokens at each step (0 = off).
            top_p: nucleus sampling, 0.05 to 1.
            prefix: text every caption starts with, e.g. "a small red".
            seed: random seed (-1 = random).

        Returns:
            A table: caption, log-probability (nats), log-probability per token.
        """
        check_prefix(prefix)
        try:
            prior = bundle.prior
            texts = prior.sample(int(n), temperature=float(temperature), top_k=int(top_k) or None,
                                 top_p=float(top_p), prefix=prefix or "", seed=None if seed in (None, -1) else int(seed))
            texts = [t for t in texts if t.strip()] or texts
            logps = prior.log_prob([t or " " for t in texts])
        except ClipGPTError as e:
            raise gr.Error(str(e)) from e
        rows = sorted(zip(texts, logps), key=lambda r: -r[1])
        return [[t, round(float(lp), 2), round(float(lp) / max(1, len(prior.encode(t)) + 1), 3)] for t, lp in rows]

    @gpu("quick")
    def score(text):
        """Log-probability of your own captions under the caption prior.

        Args:
            text: captions, one per line.

        Returns:
            A table: caption, log-probability (nats), log-probability per token.
        """
        lines = [" ".join(line.split()) for line in (text or "").splitlines() if line.strip()]
        if not lines:
            raise gr.Error("Type one or more captions, one per line, to score")
        try:
            per_token = bundle.prior.token_log_probs(lines)
        except ClipGPTError as e:
            raise gr.Error(str(e)) from e
        return [[t, round(float(lp.sum()), 2), round(float(lp.mean()), 3)] for t, lp in zip(lines, per_token)]

    with gr.Row():
        n = gr.Slider(1, 64, value=8, step=1, label="Samples")
        temperature = gr.Slider(0, 2, value=1.0, step=0.05, label="Temperature (0 = greedy)")
        top_k = gr.Slider(0, 200, value=0, step=1, label="Top-k (0 = off)")
        top_p = gr.Slider(0.05, 1, value=1.0, step=0.05, label="Top-p")
    with gr.Row():
        prefix = gr.Textbox("", label="Prefix to complete", placeholder="a small red", scale=3)
        seed = gr.Number(value=0, precision=0, label="Seed (-1 = random)", scale=1)
        go = gr.Button("Sample", variant="primary", scale=1)
    headers = ["caption", "log p (nats)", "log p per token"]
    samples = gr.Dataframe(headers=headers, label="Samples, most likely first", wrap=True,
                           elem_id="sample-table")
    with gr.Accordion("Score your own captions", open=False):
        own = gr.Textbox(label="Captions, one per line", lines=3, placeholder="a red circle\na circle red")
        score_btn = gr.Button("Score")
        scores = gr.Dataframe(headers=headers, label="Log-probability under the prior")
    inputs = [n, temperature, top_k, top_p, prefix, seed]
    go.click(sample, inputs, samples, api_name="sample")
    prefix.submit(sample, inputs, samples, api_name="sample_submit",
                  api_visibility="undocumented")   # /sample under another trigger: callable, not a second tool
    score_btn.click(score, own, scores, api_name="score")
    gr.Examples([["a large"], ["two"], ["a blue star"], [""]], [prefix], label="Prefixes")
