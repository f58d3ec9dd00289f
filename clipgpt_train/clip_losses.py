"""The CLIP trainer's losses (clipgpt_train.clip): multi-positive contrastive loss with hard negatives, and the
training-only heads that ask for ground truth (facts, presence, counts, binding) through CLIP's own text."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipgpt_core import world
from clipgpt_core.models.clip import ClipEncoder
from .clip_facts import (COUNTS, FACTS, PAIRS, PRESENCE_COLOURS, PRESENCE_POSITIONS, PRESENCE_SHAPES, PRESENCE_SIZES,
                         TRAIN_PAIRS, binding_texts, scene_facts)


def images_to_tensor(images, mean, std) -> torch.Tensor:
    x = torch.from_numpy(np.stack([np.asarray(im) for im in images])).float().div_(255)
    x = x.permute(0, 3, 1, 2)  # (B, 3, 64, 64)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    targets = targets / targets.sum(dim=1, keepdim=True)
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def clip_loss(clip: ClipEncoder, img_raw, tokens, neg_tokens, truth, neg_valid, return_text: bool = False):
    model = clip.model
    img = F.normalize(img_raw, dim=-1)                                     # (B, D)
    txt = F.normalize(model.encode_text(torch.cat([tokens, neg_tokens])), dim=-1)
    b = img.shape[0]
    scale = model.logit_scale.exp()
    logits = scale * img @ txt.T                                           # (B, B + B*K)
    # image -> text: targets over batch captions that are true of the image; hard negatives
    # of *other* images are ordinary negatives, invalid (empty) negatives are masked out
    t_i2t = torch.cat([truth.T.float(), truth.new_zeros(b, logits.shape[1] - b, dtype=torch.float)], dim=1)
    mask = torch.cat([truth.new_zeros(b, b), ~neg_valid.view(1, -1).expand(b, -1)], dim=1)
    loss_i = soft_ce(logits.masked_fill(mask, -1e4), t_i2t)
    # text -> image: each batch caption against all images
    loss_t = soft_ce(logits[:, :b].T, truth.float())
    return ((loss_i + loss_t) / 2, txt[:b]) if return_text else (loss_i + loss_t) / 2


class AuxHeads(nn.Module):
    """Training-only heads; none is part of the saved model.

    probe: the image embedding must linearly tell the scene's facts (v1: contrastive learning alone
    left shape at chance for 1000+ steps on this CPU budget; direct ground truth breaks that tie).
    trunk_probe: the same facts from the tower's pooled features, before the 128-d projection. Read
    there, a linear probe learns shape presence in 3-object scenes to AUC 0.99 in 400 steps of
    64 images; through the normalised embedding alone, the tower still read circle, star, cross and
    diamond at 0.70 after 1,500 CLIP steps.
    text_probe: what a caption states, from its text embedding. The v1 text tower's embeddings of
    3-object captions tell whether they name a circle, star, cross or diamond only at AUC 0.72-0.79
    (linear probe), so a frozen v1 text tower capped the image side there too.
    presence: a per-value scale and bias on the *centred* cosine to CLIP's own text for that value,
    which is how zero-shot presence is read, so the text directions themselves learn presence."""

    def __init__(self, dim: int, trunk_dim: int, sizes: bool = False):
        super().__init__()
        self.probe = nn.Linear(dim, len(FACTS))
        self.trunk_probe = nn.Linear(trunk_dim, len(FACTS))
        self.text_probe = nn.Linear(dim, len(FACTS))
        self.presence_scale = nn.Parameter(torch.tensor(20.0))
        self.shape_bias = nn.Parameter(torch.zeros(len(world.SHAPES)))
        self.colour_bias = nn.Parameter(torch.zeros(len(world.COLOURS)))
        self.pair_bias = nn.Parameter(torch.zeros(len(TRAIN_PAIRS)))
        self.position_bias = nn.Parameter(torch.zeros(len(world.POSITIONS)))
        if sizes:   # only with size_conjunctions, so a run of the older recipe resumes with its heads as they were
            self.size_pair_bias = nn.Parameter(torch.zeros(len(PRESENCE_SIZES)))
            self.size_shape_bias = nn.Parameter(torch.zeros(len(world.SIZES) * len(world.SHAPES)))


def centred(sims: torch.Tensor) -> torch.Tensor:
    return sims - sims.mean(dim=1, keepdim=True)


def aux_losses(clip: ClipEncoder, heads: AuxHeads, img, trunk, scenes, rng, cfg, dev) -> torch.Tensor:
    """img: (B, D) normalised image embeddings of `scenes`; trunk: (B, F) the tower's pooled features."""
    model = clip.model
    encode = lambda texts: F.normalize(model.encode_text(clip.tokenizer(texts).to(dev)), dim=-1)  # noqa: E731
    loss = img.new_zeros(())
    facts = torch.from_numpy(np.stack([scene_facts(s) for s in scenes])).to(dev)
    if cfg.aux_weight:
        loss = loss + cfg.aux_weight * F.binary_cross_entropy_with_logits(heads.probe(img * 10), facts)
    if cfg.trunk_weight:
        loss = loss + cfg.trunk_weight * F.binary_cross_entropy_with_logits(heads.trunk_probe(trunk), facts)
    if cfg.presence_weight:
        shape_txt = encode(PRESENCE_SHAPES)                                              # (6, D)
        pair_txt = encode(PRESENCE_COLOURS)                                              # (48, D)
        allowed = torch.tensor([world.split_allows(c, s, "train") for c, s in PAIRS], dtype=torch.float,
                               device=dev).view(len(world.COLOURS), len(world.SHAPES), 1)
        colour_txt = F.normalize((pair_txt.view(len(world.COLOURS), len(world.SHAPES), -1) * allowed).sum(1),
                                 dim=-1)                                                 # (8, D), train pairs only
        has_shape = torch.tensor([[any(o.shape == s for o in sc.objects) for s in world.SHAPES]
                                  for sc in scenes], dtype=torch.float, device=dev)
        has_colour = torch.tensor([[any(o.colour == c for o in sc.objects) for c in world.COLOURS]
                                   for sc in scenes], dtype=torch.float, device=dev)
        has_pair = torch.tensor([[any((o.colour, o.shape) == cs for o in sc.objects) for cs in TRAIN_PAIRS]
                                 for sc in scenes], dtype=torch.float, device=dev)
        pair_txt = pair_txt[[PAIRS.index(cs) for cs in TRAIN_PAIRS]]                     # (42, D)
        s_logits = heads.presence_scale * centred(img @ shape_txt.T) + heads.shape_bias
        c_logits = heads.presence_scale * centred(img @ colour_txt.T) + heads.colour_bias
        p_logits = heads.presence_scale * centred(img @ pair_txt.T) + heads.pair_bias
        loss = loss + cfg.presence_weight * (F.binary_cross_entropy_with_logits(s_logits, has_shape)
                                             + F.binary_cross_entropy_with_logits(c_logits, has_colour)
                                             + F.binary_cross_entropy_with_logits(p_logits, has_pair))
    if cfg.size_conjunctions:
        loss = loss + cfg.presence_weight * size_presence_loss(heads, encode, img, scenes, dev)
    if cfg.position_weight:
        # "an object in the top left", as Explain reads it: "a {shape} in the {position}" averaged over shapes
        pos_txt = F.normalize(encode(PRESENCE_POSITIONS).view(len(world.POSITIONS), len(world.SHAPES), -1).mean(1),
                              dim=-1)                                                    # (9, D)
        has_pos = torch.tensor([[any(o.position == p for o in sc.objects) for p in world.POSITIONS]
                                for sc in scenes], dtype=torch.float, device=dev)
        logits = heads.presence_scale * centred(img @ pos_txt.T) + heads.position_bias
        loss = loss + cfg.position_weight * F.binary_cross_entropy_with_logits(logits, has_pos)
    scale = model.logit_scale.exp()
    one_shape = [(i, world.SHAPES.index(sc.objects[0].shape), len(sc.objects)) for i, sc in enumerate(scenes)
                 if len({o.shape for o in sc.objects}) == 1]
    if cfg.count_weight and one_shape:
        count_txt = encode(COUNTS).view(len(world.SHAPES), 4, -1)                        # (6, 4, D)
        rows, shapes, counts = map(list, zip(*one_shape))
        logits = scale * torch.einsum("bd,bkd->bk", img[rows], count_txt[shapes])       # (b, 4)
        loss = loss + cfg.count_weight * F.cross_entropy(logits, torch.tensor(counts, device=dev) - 1)
    if cfg.binding_weight:
        found = [(i, t) for i, sc in enumerate(scenes) if len(sc.objects) > 1
                 for attr in (("colour", "size") if cfg.size_conjunctions else ("colour",))
                 for t in [binding_texts(sc, rng, attr)] if t]
        if found:
            rows = [i for i, _ in found]
            txt = encode([x for _, t in found for x in t]).view(len(found), 2, -1)       # (b, 2, D)
            logits = scale * torch.einsum("bd,bkd->bk", img[rows], txt)
            loss = loss + cfg.binding_weight * F.cross_entropy(logits, torch.zeros(len(found), dtype=torch.long,
                                                                                    device=dev))
    return loss


def size_presence_loss(heads: AuxHeads, encode, img, scenes, dev) -> torch.Tensor:
    """"a {size} {colour} {shape}" present, and "a {size} {shape}" (the same texts averaged over colours):
    conjunctions the scene's facts never ask for, so that sizes bind to objects as colours do."""
    n_sizes, n_pairs = len(world.SIZES), len(TRAIN_PAIRS)
    txt = encode(PRESENCE_SIZES)                                                         # (2 * 42, D)
    per_shape = torch.zeros(n_sizes, len(world.SHAPES), n_pairs, device=dev)             # (2, 6, 42) averaging
    for k, (_, s) in enumerate(TRAIN_PAIRS):
        per_shape[:, world.SHAPES.index(s), k] = 1
    shape_txt = F.normalize(torch.einsum("zsk,zkd->zsd", per_shape, txt.view(n_sizes, n_pairs, -1)),
                            dim=-1).reshape(n_sizes * len(world.SHAPES), -1)             # (2 * 6, D)
    has = torch.tensor([[any((o.size, o.colour, o.shape) == (z, c, s) for o in sc.objects)
                         for z in world.SIZES for c, s in TRAIN_PAIRS] for sc in scenes], dtype=torch.float,
                       device=dev)                                                        # (B, 2 * 42)
    has_shape = torch.tensor([[any((o.size, o.shape) == (z, s) for o in sc.objects)
                               for z in world.SIZES for s in world.SHAPES] for sc in scenes], dtype=torch.float,
                             device=dev)                                                  # (B, 2 * 6)
    p_logits = heads.presence_scale * centred(img @ txt.T) + heads.size_pair_bias
    s_logits = heads.presence_scale * centred(img @ shape_txt.T) + heads.size_shape_bias
    return F.binary_cross_entropy_with_logits(p_logits, has) + F.binary_cross_entropy_with_logits(s_logits, has_shape)
