"""CLIP -> GPT captioning (seed 002, ClipCap): an MLP maps the CLIP image embedding to a few
prefix embeddings that the caption prior continues into a caption.

The captioner decodes with its own copy of the prior whose blocks were fine-tuned together with
the mapper (ClipCap's fine-tuned-GPT variant); the 49408-token embedding, most of the prior's
weights, is shared with the prior and stays frozen, so the component is the mapper plus ~0.6M
decoder weights. (A mapper trained against the frozen prior, with no decoder file, also loads.)
Candidates are re-ranked by CLIP similarity; with `edit_groups` (word groups such as the colour
names) each beam also contributes its one-word edits, so CLIP can pick a value the decoder
never put first -- e.g. a colour-shape pair no training caption had.

ClipCap's published captioners (GPT-2, published/clipcap.py) run on the same Captioner with a
gpt2_decoder.Gpt2Decoder: the decoder protocol is written down there.

A bundle without a trained mapper still captions: it samples a pool of captions from the prior
and ranks them by CLIP similarity to the image (`mode` says which one ran).
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from safetensors.torch import load_file, save_file

from .component import load_module, save_component
from ..batching import batched
from ..errors import BundleError, InputError
from .beam_search import beam_search, start_tokens
from .caption_prior import CaptionPrior, generate
from .clip import SHARED_BATCH_MAX
from ..images import IMAGE_SUFFIXES
from ..paths import EXAMPLES

CONFIG_FILE = "mapper_config.json"
WEIGHTS_FILE = "mapper.safetensors"
DECODER_FILE = "decoder.safetensors"      # the prior's blocks as fine-tuned with the mapper
SHARED = "token_embedding.weight"         # shared with the prior, frozen: not in DECODER_FILE
PUBLISHED_CONFIG = "captioner_config.json"   # a published captioner's: its kind, the CLIP it reads, its decoder
MODE_MAPPER = "ClipCap mapper (CLIP image embedding -> GPT prefix)"
MODE_FALLBACK = "training-free: prior samples ranked by CLIP similarity"


@dataclass
class MapperConfig:
    clip_dim: int = 128
    gpt_width: int = 128
    prefix_length: int = 4
    hidden: int = 512
    kind: str = "mlp"          # "mlp": Linear, Tanh, Linear; "linear": one Linear (ClipCap's prefixes over 10)
    raw_input: bool = False    # reads CLIP's raw image features, not L2-normalised ones (ClipCap's published MLPs)
    input_norm: float = 0.0    # raw_input: the norm a normalised vector is scaled to (0: the CLIP's typical norm)


class PrefixMapper(nn.Module):
    """ClipCap's MLP mapper: (B, clip_dim) -> (B, prefix_length, gpt_width)."""

    def __init__(self, cfg: MapperConfig):
        super().__init__()
        self.cfg = cfg
        out = cfg.prefix_length * cfg.gpt_width
        self.net = nn.Linear(cfg.clip_dim, out) if cfg.kind == "linear" else \
            nn.Sequential(nn.Linear(cfg.clip_dim, cfg.hidden), nn.Tanh(), nn.Linear(cfg.hidden, out))

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return self.net(image_embeds).view(-1, self.cfg.prefix_length, self.cfg.gpt_width)

    def save(self, directory: str | Path) -> None:
        save_component(directory, self, self.cfg, WEIGHTS_FILE, CONFIG_FILE)

    @classmethod
    def load(cls, directory: str | Path) -> "PrefixMapper":
        return load_module(cls, MapperConfig, directory, WEIGHTS_FILE, CONFIG_FILE)


def decoder_from_prior(prior: CaptionPrior) -> CaptionPrior:
    """A copy of the prior to fine-tune with the mapper. The token embedding (and the tied head)
    is the same module as the prior's -- shared, not copied -- and is meant to stay frozen."""
    shared = prior.gpt.token_embedding
    gpt = copy.deepcopy(prior.gpt, memo={id(shared): shared})
    return CaptionPrior(gpt, str(prior.device))


def decoder_state(decoder: CaptionPrior) -> dict[str, torch.Tensor]:
    return {k: v for k, v in decoder.gpt.state_dict().items() if k != SHARED}


def typical_image_norm(clip) -> float:
    """The mean norm of the CLIP's raw image features over the example images: what a mapper that reads raw
    features gets for an L2-normalised vector (a CLIP's image features vary little in norm)."""
    images = sorted(p for p in EXAMPLES.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return float(np.linalg.norm(raw_image_features(clip, images), axis=1).mean()) if images else 1.0


@torch.no_grad()
def raw_image_features(clip, images) -> np.ndarray:
    """Images -> the CLIP's image features (N, D) as its image tower gives them, not L2-normalised."""
    x = clip.image_tensor(list(images))
    out = [np.zeros((0, clip.dim), np.float32)]
    for i in range(0, len(x), clip.batch_size):
        out.append(clip.model.encode_image(x[i:i + clip.batch_size].to(clip.device)).float().cpu().numpy())
    return np.concatenate(out)


def similarity(views: list, texts: list[str]) -> np.ndarray:
    """Each text's CLIP similarity to an image, the mean over its views: (CLIP, the image's embedding by it) pairs."""
    if not texts:
        return np.zeros(0, np.float32)
    return np.mean([clip.encode_texts(texts) @ emb for clip, emb in views], axis=0)


def _fix_articles(text: str) -> str:
    """'a orange' -> 'an orange', 'an red' -> 'a red' after an edit."""
    text = re.sub(r"\ba (?=[aeiou])", "an ", text)
    return re.sub(r"\ban (?=[^aeiou\W])", "a ", text)


class Captioner:
    """Images -> captions through CLIP and the caption prior."""

    def __init__(self, clip, prior: CaptionPrior, mapper: PrefixMapper | None = None, pool_size: int = 512,
                 decoder: CaptionPrior | None = None, edit_groups: list[list[str]] | None = None,
                 config: dict | None = None):
        self.clip, self.prior, self.mapper = clip, prior, mapper
        self.decoder = decoder or prior          # what continues the mapper's prefix (gpt2_decoder.py's protocol)
        # a published captioner's captioner_config.json (its kind, the CLIP it reads, ...); None: the bundle's own
        self.config = config
        self.beam_by_mean = getattr(self.decoder, "beam_by_mean", False)
        self._input_norm: float | None = None
        self.pool_size = pool_size
        # word -> its alternatives, for one-word edits of the beams (None: no edits)
        self.edits = {w: [o for o in g if o != w] for g in edit_groups or [] for w in g}
        self.edit_beams = 2
        # with edits: also the texts that swap two words of a group (two objects' colours, or sizes): the binding
        # a decoder gets wrong when a pair it never saw is read as two it did ("orange star, red square")
        self.swap_edits = False
        # with edits: also these texts of each candidate (text -> texts; CLIP-GPT's: the listing with one object left
        # out, world.captions.dropped_phrases), for the object a blurred vector reads twice
        self.structural_edits = None
        # ranking score = CLIP similarity + prior_weight * mean log p per token. 0 ranks by CLIP
        # alone, which favours short captions that leave out size and position; 0.05 keeps the
        # CLIP choice of colour and shape (benchmarks/bench_captions.py has the figures)
        self.prior_weight = 0.05
        # other CLIPs whose image-caption similarity joins the ranking (an image's candidates are then ranked by the
        # mean similarity over the captioner's CLIP and these): the built-in bundle's ranking_clip, trained on crowded
        # scenes, binds sizes where the bundle's CLIP, trained for retrieval, confuses them (docs/results.md, CLIP-GPT)
        self.ranking_clips: list = []
        # fallback: pool captions, their CLIP text embeddings, their per-token prior log-probs
        self._pool: tuple[list[str], np.ndarray, np.ndarray] | None = None

    @classmethod
    def load(cls, clip, prior: CaptionPrior, directory: str | Path, device: str = "cpu", **kwargs) -> "Captioner":
        directory = Path(directory)
        if (directory / PUBLISHED_CONFIG).is_file():      # its decoder is not the prior: published/clipcap.py
            raise BundleError(f"{directory} holds a published captioner ({PUBLISHED_CONFIG}); load it with "
                              f"clipgpt_core.published.clipcap.load_clipcap")
        mapper = PrefixMapper.load(directory).to(device)
        decoder = None
        if (directory / DECODER_FILE).is_file():
            decoder = decoder_from_prior(prior)
            missing, unexpected = decoder.gpt.load_state_dict(load_file(directory / DECODER_FILE), strict=False)
            if unexpected or set(missing) != {SHARED}:
                raise BundleError(f"{directory / DECODER_FILE} does not fit the prior: missing {missing}, "
                                 f"unexpected {unexpected}")
            decoder.gpt.eval()
        return cls(clip, prior, mapper, decoder=decoder, **kwargs)

    def save(self, directory: str | Path) -> None:
        if self.mapper is None:
            raise ValueError("a training-free captioner has nothing to save")
        self.mapper.save(directory)
        if self.config is not None:       # a published captioner: its own decoder, and the config naming its CLIP
            self.decoder.save(directory)
            (Path(directory) / PUBLISHED_CONFIG).write_text(json.dumps(self.config, indent=2))
        elif self.decoder is not self.prior:
            save_file({k: v.contiguous() for k, v in decoder_state(self.decoder).items()},
                      str(Path(directory) / DECODER_FILE))

    @property
    def mode(self) -> str:
        return MODE_MAPPER if self.mapper is not None else MODE_FALLBACK

    @property
    def reads_clip(self) -> str | None:
        """The CLIP (open_clip ARCH/TAG) a published captioner reads; None: the bundle's own."""
        return (self.config or {}).get("clip")

    @property
    def reads_raw(self) -> bool:
        return self.mapper is not None and self.mapper.cfg.raw_input

    @property
    def input_norm(self) -> float:
        """What an L2-normalised vector is scaled by for a mapper that reads raw features: its config's
        input_norm, else the CLIP's typical image-feature norm (typical_image_norm, measured once)."""
        if self._input_norm is None:
            self._input_norm = self.mapper.cfg.input_norm or typical_image_norm(self.clip)
        return self._input_norm

    def prefix(self, image_embeds: np.ndarray, raw: np.ndarray | None = None) -> torch.Tensor:
        """CLIP image embeddings (N, D), L2-normalised -> prefix embeddings (N, L, W). A mapper that reads raw
        features gets `raw` (N, D) when given, else the normalised vectors scaled by input_norm."""
        if self.reads_raw:
            image_embeds = np.asarray(raw if raw is not None else image_embeds * self.input_norm, np.float32)
        with torch.no_grad():
            return self.mapper(torch.from_numpy(image_embeds).to(self.decoder.device))

    def image_features(self, images) -> tuple[np.ndarray, np.ndarray | None]:
        """Images -> (L2-normalised CLIP embeddings (N, D), the raw features if the mapper reads them, else None)."""
        if not self.reads_raw:
            return self.clip.encode_images(images), None
        raw = raw_image_features(self.clip, images)
        return raw / np.linalg.norm(raw, axis=1, keepdims=True).clip(1e-12), raw

    def candidates(self, images, num_beams: int = 3, num_samples: int = 0, temperature: float = 1.0,
                   seed: int | None = 0, top: int | None = None) -> list[list[dict]]:
        """Per image: candidate captions with their log-probability under the captioner (or the
        prior), their CLIP similarity to the image and the ranking score, best score first.

        Beam search gives num_beams candidates; num_samples > 0 adds sampled ones; with edit
        groups every candidate also brings its one-word edits. top: only the best `top` candidates (None: all);
        the same as the first `top` of all, but an edit is scored by the captioner only when it could be among
        them (its CLIP similarity, which its score cannot exceed, beats the top-th best score so far)."""
        images = list(images)
        if not images:
            return []
        embs, raw = self.image_features(images)         # once: for the prefix and for ranking
        ranking = [c.encode_images(images) for c in self.ranking_clips]
        return self.candidates_from_embeddings(embs, num_beams, num_samples, temperature, seed, top, raw, ranking)

    def candidates_from_embeddings(self, embs: np.ndarray, num_beams: int = 3, num_samples: int = 0,
                                   temperature: float = 1.0, seed: int | None = 0,
                                   top: int | None = None, raw: np.ndarray | None = None,
                                   ranking: list[np.ndarray] | None = None) -> list[list[dict]]:
        """candidates() for CLIP image embeddings (N, D), L2-normalised: what a CLIP image vector says,
        however it was made (an image, the caption->CLIP prior). raw: the unnormalised features, for a mapper
        that reads them (without them it reads the vectors scaled by input_norm). ranking: the images'
        embeddings by each of ranking_clips, when there are images (a vector alone is ranked by its own CLIP)."""
        if not len(embs):
            return []
        if top is not None and top < 1:
            raise InputError(f"top must be 1 or more (or None: every candidate), got {top}")
        if self.mapper is None:
            return [ranked[:top] for ranked in self._fallback(embs, max(num_beams, num_samples, 1))]
        prefix = self.prefix(embs, raw)
        dec = self.decoder
        per_image = [[(dec.decode(ids), s) for ids, s in beams] for beams in self._beams(prefix, max(1, num_beams))]
        if num_samples:
            gen = torch.Generator(device=dec.device)
            gen.manual_seed(seed if seed is not None else int(torch.seed() % 2**62))
            rep = prefix.repeat_interleave(num_samples, dim=0)
            rows = generate(dec.gpt, start_tokens(dec, rep.shape[0], rep.device), rep, temperature=temperature,
                            generator=gen)
            texts = [dec.decode(r) for r in rows]
            logps = self._log_prob(rep, texts, [i // num_samples for i in range(len(texts))])
            for i in range(len(embs)):
                per_image[i] += list(zip(texts[i * num_samples:(i + 1) * num_samples],
                                         logps[i * num_samples:(i + 1) * num_samples]))
        edits = [self._edit_texts(cands) for cands in per_image]
        views = [[(self.clip, e)] + [(c, r[i]) for c, r in zip(self.ranking_clips, ranking or ())]
                 for i, e in enumerate(embs)]
        if top is not None:
            return [self._rank_top(prefix[i:i + 1], views[i], cands, edits[i], top)
                    for i, cands in enumerate(per_image)]
        new = [(i, t) for i, texts in enumerate(edits) for t in texts]
        if new:                                             # every edit scored, all images' in one pass
            images = [i for i, _ in new]
            logps = self._log_prob(prefix[torch.tensor(images, device=prefix.device)], [t for _, t in new], images)
            for (i, text), lp in zip(new, logps):
                per_image[i].append((text, lp))
        return [self._rank(v, cands) for v, cands in zip(views, per_image)]

    def _beams(self, prefix: torch.Tensor, num_beams: int) -> list[list[tuple[list[int], float]]]:
        """beam_search for prefixes (N, L, W). Users' images with the same beam width share its passes (batching.py):
        a step's cost is mostly reading the 49408-way head, about the same for 5 beams or 50. The rest of a caption
        (edits, ranking) is compute, not reading, and runs in each caller's thread, side by side on the cores."""
        by_mean = self.beam_by_mean
        if len(prefix) > SHARED_BATCH_MAX:
            return beam_search(self.decoder, prefix, num_beams, by_mean=by_mean)
        return batched(self, "beams", lambda ps, k: beam_search(self.decoder, torch.stack(ps), k, by_mean=by_mean))(
            list(prefix), num_beams)

    def _editable(self, words: list[str]) -> list[int]:
        """Where `words` (words and the gaps between them) hold a word of an edit group, not a background's: the
        groups are objects' ("a white star", never "an orange background")."""
        return [i for i, w in enumerate(words) if w in self.edits and words[i + 2:i + 3] != ["background"]]

    def one_word_edits(self, text: str) -> list[str]:
        """Every text that replaces one word of `text` by another of its group."""
        words = re.findall(r"\w+|\W+", text)
        edited = ("".join(words[:i]) + alt + "".join(words[i + 1:]) for i in self._editable(words)
                  for alt in self.edits[words[i]])
        return [_fix_articles(e) for e in edited]

    def swapped(self, text: str) -> list[str]:
        """Every text that swaps two different words of one group of `text` ("a red star and a blue circle" ->
        "a blue star and a red circle")."""
        words = re.findall(r"\w+|\W+", text)
        at = self._editable(words)
        out = []
        for k, i in enumerate(at):
            for j in at[k + 1:]:
                if words[j] in self.edits[words[i]]:
                    w = list(words)
                    w[i], w[j] = w[j], w[i]
                    out.append(_fix_articles("".join(w)))
        return out

    def _edit_texts(self, cands: list[tuple[str, float]]) -> list[str]:
        """The one-word edits (with swap_edits the swaps, and the structural_edits) of the `edit_beams` likeliest
        candidates that are not candidates already."""
        if not self.edits:
            return []
        have = {t for t, _ in cands}
        likeliest = sorted(cands, key=lambda c: -c[1])[:self.edit_beams]
        edits = (e for t, _ in likeliest for e in self.one_word_edits(t) + (self.swapped(t) if self.swap_edits else [])
                 + (self.structural_edits(t) if self.structural_edits else []))
        return list(dict.fromkeys(e for e in edits if e not in have))

    def _rank_top(self, prefix: torch.Tensor, views: list, cands: list[tuple[str, float]],
                  edits: list[str], top: int, chunk: int = 8) -> list[dict]:
        """The best `top` of cands and edits. score = similarity + prior_weight x log p per token and log p <= 0,
        so an edit whose similarity is below the top-th best score so far cannot enter: edits are scored by the
        captioner in order of similarity until the next one could not, `chunk` at a time (8: the bar rises sooner;
        on 40 scenes 8 or 6 took 0.86-0.94x of 16's time, the same rows)."""
        rows = self._rank(views, cands)
        edits = [t for t in edits if t.strip()]
        sims = similarity(views, edits)
        order = [int(j) for j in np.argsort(-sims, kind="stable")]
        while order:
            scores = sorted((r["score"] for r in rows), reverse=True)
            bar = scores[top - 1] if len(scores) >= top and self.prior_weight >= 0 else -np.inf
            pick = [j for j in order[:chunk] if sims[j] > bar]
            if not pick:
                break
            order = order[chunk:]
            logps = self._log_prob(prefix.expand(len(pick), -1, -1), [edits[j] for j in pick], [0] * len(pick))
            rows += [self._row(edits[j], lp, sims[j]) for j, lp in zip(pick, logps)]
        return sorted(rows, key=lambda r: -r["score"])[:top]

    def caption(self, images, num_beams: int = 5, num_samples: int = 0, rerank: bool = True,
                temperature: float = 1.0, seed: int | None = 0) -> list[str]:
        """One caption per image: the best-scored candidate (rerank=True, the default: CLIP
        similarity plus `prior_weight` x log p per token), or the likeliest beam (rerank=False)."""
        return self._best(self.candidates(images, num_beams, num_samples, temperature, seed, 1 if rerank else None),
                          rerank)

    def caption_embeddings(self, embs: np.ndarray, num_beams: int = 5, rerank: bool = True) -> list[str]:
        """caption() for CLIP image embeddings (N, D): the caption each vector reads as."""
        return self._best(self.candidates_from_embeddings(np.asarray(embs, np.float32), num_beams,
                                                          top=1 if rerank else None), rerank)

    def _best(self, ranked: list[list[dict]], rerank: bool) -> list[str]:
        key = "score" if rerank or self.mapper is None else "log_prob"
        return [max(c, key=lambda r: r[key])["caption"] for c in ranked]

    def log_prob(self, images, texts: list[str], repeats: int = 1) -> list[float]:
        """Mean per-token log p(text | image) under the mapper + prior (texts grouped per image)."""
        return self._log_prob(self.prefix(*self.image_features(images)).repeat_interleave(repeats, dim=0), texts)

    @torch.no_grad()
    def _log_prob(self, prefix: torch.Tensor, texts: list[str], images: list[int] | None = None,
                  chunk: int = 128) -> list[float]:
        """Mean log p per token of each text after its prefix; images: which image each prefix row is (rows of
        one image share their contexts: target_log_probs)."""
        out = []
        for i in range(0, len(texts), chunk):
            groups = None if images is None else images[i:i + chunk]
            out += self.decoder.mean_log_probs(texts[i:i + chunk], prefix[i:i + chunk], groups)
        return out

    def _rank(self, views: list, cands: list[tuple[str, float]]) -> list[dict]:
        seen = {}
        for text, lp in cands:
            if text.strip() and text not in seen:
                seen[text] = lp
        if not seen:
            return [self._row("", float("-inf"), 0.0)]
        texts = list(seen)
        sims = similarity(views, texts)
        return sorted((self._row(t, seen[t], s) for t, s in zip(texts, sims)), key=lambda r: -r["score"])

    def _row(self, caption: str, log_prob: float, clip_similarity: float) -> dict:
        return {"caption": caption, "log_prob": float(log_prob), "clip_similarity": float(clip_similarity),
                "score": float(clip_similarity) + self.prior_weight * max(float(log_prob), -1e9)}

    def _fallback(self, image_embeds: np.ndarray, top: int) -> list[list[dict]]:
        if self._pool is None:
            texts = sorted(set(t for t in self.prior.sample(self.pool_size, temperature=1.0, seed=0) if t.strip()))
            texts = texts or ["an image"]
            per_token = np.array([lp.mean() for lp in self.prior.token_log_probs(texts)], dtype=np.float32)
            self._pool = (texts, self.clip.encode_texts(texts), per_token)
        texts, emb, per_token = self._pool
        out = []
        for im_emb in image_embeds:
            sims = emb @ im_emb
            best = np.argsort(-sims)[:top]
            rows = [self._row(texts[j], per_token[j], sims[j]) for j in best]
            out.append(sorted(rows, key=lambda r: -r["score"]))
        return out
