"""CLIP-GPT (seed 002): one GPT that reads CLIP image vectors among words and writes words or a CLIP image vector.

Grown from the caption prior (CLIP's text tower, CLIP's tokenizer): an image enters as `image_tokens` input
positions (ClipCap's MLP mapper), a vector leaves from the hidden state at an output marker through a linear
head (initialised from CLIP's text projection, trained with a contrastive loss and a cosine term). Sequences:

    write([image])                          [img x4] SOT caption EOT            (the captioner's layout)
    write([])                               SOT caption EOT                     (the prior's)
    write([a, b, "what changed?"])          [img][img] SOT what changed ? SOT edit EOT
    embed(["a red star"])                   SOT a red star OUT  -> vector       (like CLIP's text tower at EOT)
    embed([image, "make the red star blue"])  [img] SOT make the red star blue OUT -> vector

Each text part starts with SOT; an answer starts with SOT. The token embedding is the prior's (shared, frozen,
not stored again); the words CLIP never trained on that edits use get small trained corrections (extra_tokens).

    gpt = bundle.clip_gpt
    gpt.embed([image, "make the red star blue"])     # -> np.ndarray (D,), L2-normalised
    gpt.write([image_a, image_b, "what changed?"])   # -> "make the red star blue"
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import BundleError, InputError
from .caption_prior import CaptionGPT, CaptionPrior, PriorConfig
from .beam_search import beam_search
from .captioner import Captioner, MapperConfig, PrefixMapper

CONFIG_FILE = "clip_gpt_config.json"
WEIGHTS_FILE = "model.safetensors"
SHARED = "token_embedding.weight"     # the prior's: not stored
MAX_PARTS = 8
MAX_TEXT_CHARS = 300


@dataclass
class ClipGPTConfig:
    prior: dict = field(default_factory=dict)   # the PriorConfig of the GPT (its context grown)
    clip_dim: int = 128
    image_tokens: int = 4
    mapper_hidden: int = 512
    extra_tokens: list = field(default_factory=list)   # token ids whose embedding rows get trained corrections


class ClipGPTNet(CaptionGPT):
    """A CaptionGPT that also reads image vectors (mapper) and writes one (out marker + head). embed() and
    logits() add the extra tokens' corrections, so generate() and beam_search() drive it as any decoder."""

    def __init__(self, cfg: ClipGPTConfig):
        super().__init__(PriorConfig(**cfg.prior))
        self.net_cfg = cfg
        w = self.cfg.width
        self.mapper = PrefixMapper(MapperConfig(cfg.clip_dim, w, cfg.image_tokens, cfg.mapper_hidden))
        self.out_marker = nn.Parameter(torch.zeros(w))
        self.vector_head = nn.Linear(w, cfg.clip_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))   # training's contrast
        self.token_delta = nn.Parameter(torch.zeros(len(cfg.extra_tokens), w))
        index = torch.zeros(self.cfg.vocab_size, dtype=torch.long)
        index[torch.tensor(cfg.extra_tokens, dtype=torch.long)] = torch.arange(1, len(cfg.extra_tokens) + 1)
        self.register_buffer("delta_index", index, persistent=False)
        self.register_buffer("extra_ids", torch.tensor(cfg.extra_tokens, dtype=torch.long), persistent=False)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:                            # (B, T) -> (B, T, W)
        delta = torch.cat([self.token_delta.new_zeros(1, self.cfg.width), self.token_delta])
        return self.token_embedding(tokens) + F.embedding(self.delta_index[tokens], delta)

    def logits(self, states: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:   # -> (..., V | K)
        out = super().logits(states, ids)
        if len(self.extra_ids):
            if ids is None:
                out[..., self.extra_ids] += states @ self.token_delta.T
            else:                                   # the columns of `ids` that are extra tokens
                k = self.delta_index[ids]
                out[..., k > 0] += states @ self.token_delta[k[k > 0] - 1].T
        return out

    def vectors(self, states: torch.Tensor) -> torch.Tensor:                          # (N, W) -> (N, D) unit
        return F.normalize(self.vector_head(states), dim=-1)


@dataclass
class Sequences:
    """A batch of interleaved sequences, right-padded: token ids (image and marker slots hold 0), which slots
    are image positions (filled in order from `images`, image_tokens each), which is the output marker."""
    tokens: torch.Tensor          # (B, T) long
    image_slot: torch.Tensor      # (B, T) bool
    out_slot: torch.Tensor        # (B, T) bool
    images: torch.Tensor          # (N, D) image vectors in the order their slots appear
    lengths: list


def build(net: ClipGPTNet, rows: list[list], device) -> Sequences:
    """rows: per sequence, a list of items: an int token id, ("img", vector (D,)) or "OUT"."""
    k = net.net_cfg.image_tokens
    flat = []
    for row in rows:
        seq = []
        for item in row:
            if isinstance(item, tuple):
                seq += [("img", item[1])] + [("img", None)] * (k - 1)
            else:
                seq.append(item)
        flat.append(seq)
    t = max(map(len, flat))
    if t > net.cfg.context_length:
        raise InputError(f"the sequence needs {t} positions; CLIP-GPT's context holds {net.cfg.context_length} "
                         f"(an image takes {k})")
    tokens = torch.zeros(len(flat), t, dtype=torch.long)
    image_slot = torch.zeros(len(flat), t, dtype=torch.bool)
    out_slot = torch.zeros(len(flat), t, dtype=torch.bool)
    images = []
    for i, seq in enumerate(flat):
        for j, item in enumerate(seq):
            if isinstance(item, tuple):
                image_slot[i, j] = True
                if item[1] is not None:
                    images.append(torch.as_tensor(item[1], dtype=torch.float32))
            elif item == "OUT":
                out_slot[i, j] = True
            else:
                tokens[i, j] = item
    vecs = torch.stack(images) if images else torch.zeros(0, net.net_cfg.clip_dim)
    return Sequences(tokens.to(device), image_slot.to(device), out_slot.to(device), vecs.to(device),
                     [len(s) for s in flat])


def inputs(net: ClipGPTNet, s: Sequences) -> torch.Tensor:
    """Sequences -> input embeddings (B, T, W): tokens embedded, image slots mapped, the marker placed."""
    x = net.embed(s.tokens)
    if len(s.images):
        x = x.masked_scatter(s.image_slot[..., None], net.mapper(s.images).reshape(-1, x.shape[-1]).to(x.dtype))
    return torch.where(s.out_slot[..., None], net.out_marker.to(x.dtype), x)


class ClipGPT:
    """The public face: parts (strings and PIL images, in order) in; a CLIP image vector or text out."""

    def __init__(self, net: ClipGPTNet, clip, device: str = "cpu"):
        self.net = net.to(device).eval()
        self.clip = clip
        self.text = CaptionPrior(self.net, device)      # tokenizer, decoding, the decoder protocol
        self.cfg = self.net.cfg
        # image -> caption is the captioner's job, with its CLIP re-ranking and one-word edits
        from ..world.captions import WORD_GROUPS, dropped_phrases
        self.captioner = Captioner(clip, self.text, self.net.mapper, decoder=self.text, edit_groups=WORD_GROUPS)
        self.captioner.swap_edits = True
        self.captioner.structural_edits = dropped_phrases

    @property
    def device(self) -> torch.device:
        return self.net.positional_embedding.device

    # -- parts -> sequence items ------------------------------------------------------------
    def check_parts(self, parts) -> list:
        if isinstance(parts, (str, Image.Image)):
            parts = [parts]
        parts = list(parts)
        if len(parts) > MAX_PARTS:
            raise InputError(f"at most {MAX_PARTS} parts (images and texts), got {len(parts)}")
        for p in parts:
            if not isinstance(p, (str, Image.Image, np.ndarray)):
                raise InputError(f"a part is a string or a PIL image, not {type(p).__name__}")
        return parts

    def items(self, parts: list) -> list:
        """Parts -> sequence items; images are encoded by the bundle's CLIP in one batch (an np.ndarray part is
        a CLIP image vector already)."""
        images = [p for p in parts if isinstance(p, Image.Image)]
        vecs = iter(self.clip.encode_images(images)) if images else iter(())
        out = []
        for p in parts:
            if isinstance(p, str):
                text = " ".join(p.split())[:MAX_TEXT_CHARS]
                if text:
                    out += [self.cfg.sot_token] + self.text.encode(text)
            else:
                out.append(("img", next(vecs) if isinstance(p, Image.Image) else np.asarray(p, np.float32)))
        return out

    # -- the API --------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, parts) -> np.ndarray:
        """The CLIP image vector CLIP-GPT writes after the parts: (D,), L2-normalised."""
        return self.embed_batch([parts])[0]

    @torch.no_grad()
    def embed_batch(self, batch: list) -> np.ndarray:
        """embed() for many part lists at once -> (N, D)."""
        rows = [self.items(self.check_parts(p)) + ["OUT"] for p in batch]
        if not rows:
            return np.zeros((0, self.net.net_cfg.clip_dim), np.float32)
        s = build(self.net, rows, self.device)
        states = self.net.hidden(inputs(self.net, s))                                  # (B, T, W)
        at = torch.tensor([n - 1 for n in s.lengths], device=self.device)
        return self.net.vectors(states[torch.arange(len(rows)), at]).float().cpu().numpy()

    @torch.no_grad()
    def write(self, parts, num_beams: int = 5, rerank: bool = True) -> str:
        """The text CLIP-GPT writes after the parts. One image alone is captioned (beam search, CLIP re-ranking:
        the captioner). Two images and a question ("what changed?"): with rerank, the beams and their neighbouring
        edits are checked by doing them (checked_edit). Anything else: the likeliest beam."""
        parts = self.check_parts(parts)
        if len(parts) == 1 and isinstance(parts[0], Image.Image):
            return self.captioner.caption([parts[0]], num_beams=max(num_beams, 1))[0]
        items = self.items(parts)
        if not items:
            return self.text.sample(1, temperature=0)[0]
        s = build(self.net, [items], self.device)
        prefix = inputs(self.net, s)                                                   # (1, T, W)
        beams = [self.text.decode(ids) for ids, _ in beam_search(self.text, prefix, max(num_beams, 1), by_mean=True)[0]]
        images = [i[1] for i in items if isinstance(i, tuple) and i[1] is not None]
        if not rerank or len(images) != 2:
            return beams[0]
        return self.checked_edit(images[0], images[1], beams)

    def checked_edit(self, before: np.ndarray, after: np.ndarray, candidates: list[str], rounds: int = 3) -> str:
        """The edit whose vector, written after `before`, comes nearest `after` (CLIP image vectors): the candidates
        that are edits of the world's language, then the edits one field away from the best so far (world.edits.
        neighbours: the object named, the new colour, shape, size or cell, the background) while they come nearer,
        up to `rounds` times. An edit may only name an object the first image holds, as its caption says (when the
        caption names every object's colour), and must change something: not the background to the one it has, nor
        an object into itself. When every candidate is ruled out so, the search starts from their neighbours; without
        an edit among the candidates, the likeliest is kept."""
        from ..world.captions import parse_caption
        from ..world.edits import edit_text, is_no_op, neighbours, parse_edit
        target = np.asarray(after, np.float32)
        d = parse_caption(self.captioner.caption_embeddings(np.asarray(before, np.float32)[None])[0])
        held = {(p.colour, p.shape) for p in d.phrases} if d is not None and all(p.colour for p in d.phrases) else None
        background = d.background if d is not None else None

        def scored(edits):
            edits = [e for e in edits if (held is None or e.target is None or e.target in held)
                     and not is_no_op(e, background)]
            texts = [edit_text(e) for e in dict.fromkeys(edits)]
            return dict(zip(texts, (self.embed_batch([[before, t] for t in texts]) @ target).tolist())) if texts else {}
        parsed = [e for e in map(parse_edit, candidates) if e is not None]
        scores = scored(parsed) or scored(n for e in parsed for n in neighbours(e))   # all ruled out: their neighbours
        if not scores:
            return candidates[0]
        for _ in range(rounds):
            best = max(scores, key=scores.get)
            new = scored(n for n in neighbours(parse_edit(best)) if edit_text(n) not in scores)
            scores |= new
            if not new or max(new.values()) <= scores[best]:
                break
        return max(scores, key=scores.get)

    def sample(self, n: int = 1, **kwargs) -> list[str]:
        """Captions from CLIP-GPT as a caption prior (no parts): CaptionPrior.sample's arguments."""
        return self.text.sample(n, **kwargs)

    # -- persistence ----------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous()
                 for k, v in self.net.state_dict().items() if k != SHARED}
        save_file(state, directory / WEIGHTS_FILE)
        cfg = asdict(self.net.net_cfg) | {"prior": asdict(self.net.cfg)}       # the GPT's as it is (its writes)
        (directory / CONFIG_FILE).write_text(json.dumps(cfg, indent=2))

    @classmethod
    def load(cls, directory: str | Path, clip, prior: CaptionPrior, device: str = "cpu") -> "ClipGPT":
        directory = Path(directory)
        cfg = ClipGPTConfig(**json.loads((directory / CONFIG_FILE).read_text()))
        net = ClipGPTNet(cfg)
        net.token_embedding = prior.gpt.token_embedding            # shared with the prior
        state = {k: v.float() for k, v in load_file(directory / WEIGHTS_FILE).items()}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or set(missing) != {SHARED}:
            raise BundleError(f"{directory / WEIGHTS_FILE} does not fit CLIP-GPT's config: missing {missing}, "
                              f"unexpected {unexpected}")
        return cls(net, clip, device)


def grow(prior: CaptionPrior, clip, extra_words: list[str], context_length: int = 48,
         captioner: Captioner | None = None) -> ClipGPTNet:
    """A CLIP-GPT grown from the caption prior: its GPT (the captioner's fine-tuned blocks and mapper when given),
    the context grown (new positions start as copies of the last ones), the out marker as end-of-text's embedding
    and the vector head as CLIP's text projection (so "SOT caption OUT" starts near CLIP's text embedding)."""
    source = captioner.decoder.gpt if captioner is not None and captioner.mapper is not None else prior.gpt
    ids = sorted({i for w in extra_words for i in prior.encode(w)})
    pcfg = asdict(prior.cfg) | {"context_length": context_length}
    cfg = ClipGPTConfig(prior=pcfg, clip_dim=clip.dim, extra_tokens=ids,
                        image_tokens=captioner.mapper.cfg.prefix_length if captioner and captioner.mapper else 4,
                        mapper_hidden=captioner.mapper.cfg.hidden if captioner and captioner.mapper else 512)
    net = ClipGPTNet(cfg)
    state = {k: v for k, v in source.state_dict().items() if k != "positional_embedding"}
    net.load_state_dict(state, strict=False)
    net.token_embedding = prior.gpt.token_embedding
    old = source.positional_embedding.data
    n = old.shape[0]
    net.positional_embedding.data[:n] = old
    net.positional_embedding.data[n:] = old[-1:].expand(context_length - n, -1)
    if captioner is not None and captioner.mapper is not None:
        net.mapper.load_state_dict(captioner.mapper.state_dict())
    with torch.no_grad():
        net.out_marker.copy_(prior.gpt.token_embedding.weight[prior.cfg.eot_token])
        from .clip import text_tower
        proj = text_tower(clip.model).text_projection
        if proj is not None and tuple(proj.shape) == (net.cfg.width, clip.dim):
            net.vector_head.weight.copy_(proj.data.T)
    return net
