"""Train CLIP-GPT (seed 002): one GPT that reads image vectors among words and writes words or an image vector.

    python -m clipgpt_train.clip_gpt                     # the shipped one (assets/shapes/clip_gpt)
    python -m clipgpt_train.clip_gpt --steps 20 --out /tmp/clip_gpt     # a smoke run

Grown from the caption prior (--init captioner: from a captioner component's fine-tuned blocks and mapper; as good,
and the bundle no longer trains one: CLIP-GPT is its captioner). Every step
mixes five tasks drawn fresh from the world, each exact there: image -> whole caption (colour, size and
background always stated), text-only captions (it stays a caption prior), caption -> image vector, image + edit
-> the edited scene's vector, two images + "what changed?" -> the edit. Words: cross-entropy on the answers.
Vectors: a contrastive loss against every image vector of the step (sources and near misses of the edits
included, so an edit must land on its own scene and not on the same change made to the other object) plus a
cosine term. The CLIP and the shared token embedding stay frozen. Resumable: run the same command again.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipgpt_core.models.clip_gpt import ClipGPT, build, grow, inputs
from clipgpt_core.world import edits as E
from clipgpt_core.world import scenes as world
from clipgpt_core.world.corpus import mixed_scene, vocabulary, world_captions
from .clip_losses import soft_ce
from .loop import Resume, fit, run_cli, write_train_record

WHOLE = frozenset({"colour", "size", "background"})          # what write([image]) always states
EVERYTHING = WHOLE | {"position"}
# words edits use that ShapesWorld captions never did: their embedding rows get trained corrections
EDIT_WORDS = ["make", "turn", "replace", "with", "change", "into", "remove", "delete", "add", "put", "to",
              "what", "changed", "?", "the", "background"]


@dataclass
class ClipGPTTrainConfig:
    bundle: str = "shapes"
    out: str = "assets/shapes/clip_gpt"
    steps: int = 2500
    captions: int = 40          # per step: image -> whole caption
    texts: int = 12             # text-only captions
    text_vectors: int = 32      # caption -> vector
    edit_vectors: int = 48      # image + edit -> vector
    differences: int = 32       # two images + "what changed?" -> edit
    lr: float = 1e-3
    min_lr: float = 5e-5
    warmup: int = 100
    vector_weight: float = 1.0
    contrastive: bool = True    # False: the cosine term alone (seed 002's regression onto the vector)
    cosine_weight: float = 1.0
    init: str = "prior"         # "prior": the prior, a new mapper (the shipped one); "captioner": a captioner
    # component's fine-tuned blocks and mapper (measured as good: docs/results.md "CLIP-GPT")
    noise: float = 0.02         # on input image vectors (CapDec): robustness to other renderers
    context_length: int = 48
    seed: int = 0
    threads: int = 2
    device: str = "auto"
    checkpoint: str = "runs/train_bundle/clip_gpt"


def _render(scene, rng):
    return world.render(scene, rng, world.RenderStyle.random(rng))


class Tasks:
    """One step's examples: sequences to write (items, answer ids), sequences to embed (items, target image),
    and the images they use, rendered now and encoded in one batch."""

    def __init__(self, rng: random.Random, text):
        self.rng, self.text = rng, text
        self.images, self.scenes = [], []
        self.writes, self.embeds = [], []        # (items, answer ids) / (items, target image index, desc or None)

    def image(self, scene) -> tuple:
        self.images.append(_render(scene, self.rng))
        self.scenes.append(scene)
        return ("img", len(self.images) - 1)

    def words(self, text: str) -> list[int]:
        return [self.text.cfg.sot_token] + self.text.encode(text)

    def fits(self, items: list, answer: list[int], room: int) -> bool:
        used = sum(4 if isinstance(i, tuple) else 1 for i in items) + len(answer) + 2
        return used <= room

    def caption(self, room: int) -> None:
        while True:
            scene = mixed_scene(self.rng, (0.3, 0.4, 0.2, 0.1))
            answer = self.text.encode(world.caption_text(world.describe(scene, self.rng, WHOLE), self.rng))
            if self.fits([("img",)], answer, room):
                self.writes.append(([self.image(scene)], answer))
                return

    def caption_only(self, caption: str, room: int) -> None:
        answer = self.text.encode(caption)
        if self.fits([], answer, room):
            self.writes.append(([], answer))

    def text_vector(self, room: int) -> None:
        while True:
            scene = mixed_scene(self.rng, (0.3, 0.35, 0.2, 0.15))
            must = self.rng.choice([EVERYTHING, EVERYTHING, WHOLE, frozenset()])
            d = world.describe(scene, self.rng, must)
            words = self.words(world.caption_text(d, self.rng))
            if len(words) + 1 <= room:
                self.embeds.append((words + ["OUT"], self.image(scene)[1], d))
                return

    def edit_vector(self) -> None:
        while True:
            scene = mixed_scene(self.rng, (0.3, 0.4, 0.3, 0.0))
            made = E.random_edit(scene, self.rng)
            if made is None:
                continue
            edit, after = made
            source = self.image(scene)
            target = self.image(after)[1]
            miss = E.near_miss(scene, edit, self.rng)
            if miss is not None:
                self.image(miss)
            self.embeds.append(([source] + self.words(E.edit_text(edit, self.rng)) + ["OUT"], target, None))
            return

    def difference(self) -> None:
        while True:
            scene = mixed_scene(self.rng, (0.3, 0.4, 0.3, 0.0))
            made = E.random_edit(scene, self.rng)
            if made is not None:
                edit, after = made
                items = [self.image(scene), self.image(after)] + self.words(E.DIFF_QUESTION)
                self.writes.append((items, self.text.encode(E.edit_text(edit))))
                return


def train(cfg: ClipGPTTrainConfig) -> ClipGPT:
    from clipgpt_core.bundle import load_bundle
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = random.Random(cfg.seed)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    bundle = load_bundle(cfg.bundle, device=device, strict=False)
    clip, prior = bundle.clip, bundle.prior
    if cfg.init not in ("captioner", "prior"):
        raise SystemExit(f"--init must be captioner or prior, got {cfg.init!r}")
    captioner = bundle.captioners.get("captioner") if cfg.init == "captioner" else None
    if cfg.init == "captioner" and captioner is None:
        raise SystemExit(f"--init captioner needs a bundle with a captioner component; {cfg.bundle} has none "
                         "(the built-in bundle's captioner is CLIP-GPT itself): use --init prior")
    net = grow(prior, clip, EDIT_WORDS, cfg.context_length, captioner).to(device)
    net.token_embedding.requires_grad_(False)
    model = ClipGPT(net, clip, device)
    params = [p for n, p in net.named_parameters() if n != "token_embedding.weight"]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    room = cfg.context_length
    t0 = time.time()

    def step() -> float:
        tasks = Tasks(rng, model.text)
        for _ in range(cfg.captions):
            tasks.caption(room)
        for c in world_captions(rng, cfg.texts):
            tasks.caption_only(c, room)
        for _ in range(cfg.text_vectors):
            tasks.text_vector(room)
        for _ in range(cfg.edit_vectors):
            tasks.edit_vector()
        for _ in range(cfg.differences):
            tasks.difference()
        vecs = torch.from_numpy(clip.encode_images(tasks.images)).to(device)             # (N, D), frozen
        noisy = F.normalize(vecs + cfg.noise * torch.randn_like(vecs), dim=-1)
        sot, eot = prior.cfg.sot_token, prior.cfg.eot_token

        def fill(items):
            return [("img", noisy[i[1]]) if isinstance(i, tuple) else i for i in items]
        net.train()
        # words: [parts] SOT answer EOT, loss on answer and EOT
        rows = [fill(items) + [sot] + answer + [eot] for items, answer in tasks.writes]
        s = build(net, rows, device)
        states = net.hidden(inputs(net, s))                                              # (B, T, W)
        at, targets = [], []
        for r, ((_, answer), n) in enumerate(zip(tasks.writes, s.lengths)):
            m = len(answer) + 1
            at += [(r, p) for p in range(n - m - 1, n - 1)]
            targets += answer + [eot]
        rr, pp = zip(*at)
        logits = net.logits(states[list(rr), list(pp)]).float()                           # (M, V)
        word_loss = F.cross_entropy(logits, torch.tensor(targets, device=device))
        # vectors: [parts] OUT -> the target image's vector, against every image of the step
        s = build(net, [fill(items) for items, _, _ in tasks.embeds], device)
        states = net.hidden(inputs(net, s))
        pred = net.vectors(states[torch.arange(len(s.lengths)), torch.tensor(s.lengths) - 1])   # (K, D)
        truth = torch.zeros(len(tasks.embeds), len(vecs))
        for k, (_, target, desc) in enumerate(tasks.embeds):
            truth[k, target] = 1
            for j, scene in enumerate(tasks.scenes):   # other images the caption is true of / of the same content
                if j != target and (world.is_true(desc, scene) if desc is not None
                                    else E.same_content(scene, tasks.scenes[target])):
                    truth[k, j] = 1
        logits = net.logit_scale.exp() * pred @ vecs.T
        cos = (pred * vecs[[t for _, t, _ in tasks.embeds]]).sum(-1)
        vector_loss = cfg.cosine_weight * (1 - cos).mean()
        if cfg.contrastive:
            vector_loss = vector_loss + soft_ce(logits, truth.to(device))
        loss = word_loss + cfg.vector_weight * vector_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            net.logit_scale.clamp_(0, 4.6)
        return loss.item()

    ema = fit(step, opt, cfg, "train clip_gpt", resume=Resume(cfg.checkpoint, {"net": net}, rng))
    net.eval().requires_grad_(False)
    net.restrict_writes(model.text.token_ids(vocabulary()))           # captions, edits: the world's words
    model = ClipGPT(net, clip, device)
    model.save(cfg.out)
    write_train_record(cfg.out, cfg, time.time() - t0, final_loss_ema=ema)
    return model


def main(argv=None):
    run_cli(ClipGPTTrainConfig, train, __doc__, argv)


if __name__ == "__main__":
    main()
