"""The seeds' published set at its published sizes, from random-init stand-ins (random weights give real sizes,
timings and memory): built once, converted, assembled, loaded in a fresh process, and timed against the published code.

    python -m benchmarks.bench_published [--work /tmp/clipgpt-published-bench] [--out benchmarks/results/published.json]
    python -m benchmarks.bench_published --device cuda --out published_cuda.json      # the same parts on a GPU

Built into --work once: OpenAI CLIP ViT-L/14 and ViT-B/32 (open_clip) in open_clip's Hub layout, in a Hugging Face
cache of the work folder's own where `clipgpt fetch` puts the real ones (so assembly resolves open_clip:ViT-L-14/openai
and ClipCap's ViT-B-32/openai as for the published set, offline); clip_gpt.pt (the published CLIPGPT pickled, 768
wide, 12 layers); two ClipCap state dicts (GPT-2 small + MLP mapper 512->3840->7680, with transformers 4.11's mask
buffers); GPT-2's config and a synthetic byte-level BPE of GPT-2's size (the real one is not on this machine); an
SD 1.5-architecture pipeline whose text encoder is the ViT-L/14 tower. Conversions and assembly are timed; fresh
processes load the bundle without and with the renderer; the second times the parts against the published code.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORK = "/tmp/clipgpt-published-bench"
COMMIT = "0" * 40                                  # the stand-ins' snapshot in the work folder's Hub cache
CLIPS = {"vit_l_14": ("timm/vit_large_patch14_clip_224.openai", "ViT-L-14-quickgelu"),
         "vit_b_32": ("timm/vit_base_patch32_clip_224.openai", "ViT-B-32-quickgelu")}
CLIPCAPS = {"coco": 1, "conceptual": 2}             # name -> seed
# the published pieces' parameter counts, for checking the stand-ins' sizes
PUBLISHED_PARAMS = {"vit_l_14": 427_616_513, "vit_b_32": 151_277_313, "clip_gpt": 161_000_000,
                    "sd_unet": 859_520_964, "sd_vae": 83_653_863, "sd_text_encoder": 123_060_480,
                    "clipcap_gpt2": 124_439_808, "clipcap_mapper": 31_468_800}
now = time.perf_counter


def timed(f, *args, **kwargs):
    """-> (f's result, seconds)."""
    t = now()
    return f(*args, **kwargs), now() - t


def numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def memory() -> dict:
    """RSS now, its file-backed part (weights mmapped from safetensors count only once read), and the peak, GiB."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {key: round(int(status[field].split()[0]) / 2**20, 2)
            for key, field in (("rss_gib", "VmRSS"), ("rss_file_gib", "RssFile"), ("peak_rss_gib", "VmHWM"))}


# -- building the stand-ins --------------------------------------------------------------------------------------------
def hub_snapshot(cache: Path, repo: str) -> Path:
    """The folder huggingface_hub's cache layout holds `repo`'s main revision in (refs/main names the commit)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    return root / "snapshots" / COMMIT


def gpt2_folder(path: Path) -> None:
    """GPT-2 small's config and a byte-level BPE of GPT-2's size: 256 byte symbols, 50000 merges of two of them,
    <|endoftext|>. ClipCap's stop token "." stays one token, as in GPT-2's."""
    from transformers import GPT2Config
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode
    symbols = list(bytes_to_unicode().values())
    pairs = [(a, b) for a in symbols for b in symbols][:50000]
    tokens = symbols + [a + b for a, b in pairs] + ["<|endoftext|>"]
    path.mkdir(parents=True, exist_ok=True)
    GPT2Config().save_pretrained(path)
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in pairs) + "\n")


def clipcap_file(path: Path, seed: int) -> dict:
    """ClipCaptionModel's state dict as ClipCap published it (prefix 10, ViT-B/32's 512 in, 4.11's mask buffers)."""
    import torch
    from transformers import GPT2Config
    from benchmarks.published_code import clipcap_model, standins
    torch.manual_seed(seed)
    model = clipcap_model.ClipCaptionModel(10, 512, GPT2Config())
    standins.save_as_published(model, path)
    return {"clipcap_gpt2": numel(model.gpt), "clipcap_mapper": numel(model.clip_project)}


def sd_folder(path: Path, clip) -> dict:
    """Stable Diffusion 1.5's UNet and VAE configs at random init, the CLIP's text tower as its text encoder."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from clipgpt_core.models.hf_text import text_encoder_from_clip, tokenizer_from_clip
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                              steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder_from_clip(clip), unet=unet, scheduler=scheduler,
                                   tokenizer=tokenizer_from_clip(clip), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(path, safe_serialization=True)
    return {"sd_unet": numel(unet), "sd_vae": numel(vae), "sd_text_encoder": numel(pipe.text_encoder)}


def build(work: Path) -> dict:
    """Every stand-in, once: later runs reuse the folder (built.json marks it whole) -> parameter counts."""
    marker = work / "built.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    import open_clip
    from benchmarks.published_code import standins      # stand-ins built with the published code's classes
    from clipgpt_core.models.clip import create_clip
    params, t0 = {}, now()
    for key, (repo, arch) in CLIPS.items():
        clip = create_clip(arch)                                   # open_clip at random init
        v = open_clip.get_model_config(arch)["vision_cfg"]
        standins.open_clip_folder(hub_snapshot(work / "hf", repo), clip.model, v["image_size"], v["patch_size"],
                                  v["width"], v["layers"])
        params[key] = numel(clip.model)
        if key == "vit_l_14":                                      # SD 1.5's text encoder is ViT-L/14's text tower
            params |= sd_folder(work / "sd15", clip)
        del clip
        print(f"built {key} ({now() - t0:.0f} s)", file=sys.stderr, flush=True)
    standins.clip_gpt_file(work / "clip_gpt.pt", width=768, layers=12, heads=12)
    for name, seed in CLIPCAPS.items():
        params |= clipcap_file(work / f"{name}_weights.pt", seed)
    gpt2_folder(work / "gpt2")
    params["build_s"] = round(now() - t0, 1)
    marker.write_text(json.dumps(params))
    return params


def convert_and_assemble(work: Path) -> dict:
    """The three conversions and the assembly, each timed (the prior is converted first so that its time is its own)."""
    from clipgpt_core.published.assemble import assemble
    from clipgpt_core.published.clip_gpt import convert_clip_gpt
    from clipgpt_core.published.clipcap import convert_clipcap
    out = work / "converted"
    times = {"convert_clip_gpt_s": round(timed(convert_clip_gpt, work / "clip_gpt.pt", out / "prior")[1], 2)}
    for name in CLIPCAPS:
        times[f"convert_clipcap_{name}_s"] = round(timed(convert_clipcap, work / f"{name}_weights.pt", work / "gpt2",
                                                         out / name, clip="ViT-B-32/openai")[1], 2)
    times["assemble_s"] = round(timed(assemble, work / "bundle", clip="open_clip:ViT-L-14/openai", name="published",
                                      prior=str(out / "prior"), captioners=[str(out / n) for n in CLIPCAPS],
                                      renderer=str(work / "sd15"))[1], 3)     # the large files are hard-linked
    return times


# -- the fresh process: load, then time --------------------------------------------------------------------------------
def child(work: Path, full: bool, device: str = "cpu") -> dict:
    """The bundle with every part but the renderer; full: with the renderer too, then the timings."""
    from clipgpt_core.bundle import load_bundle
    bundle, secs = timed(load_bundle, work / "bundle", device)
    result = {"load_bundle_s": round(secs, 2), "captioners": sorted(bundle.captioners), "clips": sorted(bundle.clips)}
    if full:
        result["load_renderer_s"] = round(timed(lambda: bundle.renderer)[1], 2)   # its first use loads the pipeline
    result["load_s"] = round(secs + result.get("load_renderer_s", 0), 2)
    result |= memory()
    # what the loaded bundle holds once used: a strided read touches every page of every weight
    modules = [bundle.clip.model, bundle.prior.gpt, *(c.model for c in bundle.clips.values())]
    modules += [m for c in bundle.captioners.values() for m in (c.mapper, getattr(c.decoder, "gpt", None)) if m]
    if full:
        modules += [bundle.renderer.pipe.unet, bundle.renderer.pipe.vae, bundle.renderer.pipe.text_encoder]
    for t in (t for m in modules for t in m.state_dict().values()):
        t.reshape(-1)[::256].sum()
    result["weights_read"] = memory()
    if full:
        result["timings"] = time_parts(bundle, work, device)
        result["after_timings"] = memory()
        if device.startswith("cuda"):
            import torch
            result["cuda_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["loadavg_after"] = os.getloadavg()     # the machine is shared: how busy it was
    return result


def time_parts(bundle, work: Path, device: str = "cpu") -> dict:
    import numpy as np
    import torch
    from PIL import Image
    from transformers import GPT2Config, GPT2Tokenizer
    from benchmarks.published_code import clipcap_model, standins
    out, rng = {}, np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)) for _ in range(8)]
    b32 = bundle.captioner.clip
    for name, clip in (("vit_l_14", bundle.clip), ("vit_b_32", b32)):   # the first batch of two warms up
        out[f"{name}_images_per_s"] = round(8 / min(timed(clip.encode_images, images)[1] for _ in range(2)), 2)
    print(f"encodes {out}", file=sys.stderr, flush=True)
    # CLIP GPT: tokens counted at the head (rows per step), the published loop's at its transformer (one per token)
    rows: list[int] = []
    hook = bundle.prior.gpt.lm_head.register_forward_hook(lambda m, i, o: rows.append(o.shape[:-1].numel()))
    bundle.prior.sample(1, temperature=0.7, seed=1)                   # warm-up
    rows.clear()
    ours = timed(bundle.prior.sample, 8, temperature=0.7, seed=0)[1]
    tokens = sum(rows)
    hook.remove()
    # the published class, built by its own code, holding the file's weights (read by the restricted unpickler)
    from clipgpt_core.published.unpickle import load_module_pickle, module_state
    state = module_state(load_module_pickle(work / "clip_gpt.pt"))
    width, layers = state["positional_embedding"].shape[1], 1 + max(
        int(k.split(".")[2]) for k in state if k.startswith("transformer.resblocks."))
    published = standins.clip_gpt_model(width, layers, width // 64)
    published.load_state_dict(state)
    published.to(device)
    out["clip_gpt_params"] = numel(published)
    calls: list[int] = []
    published.transformer.register_forward_hook(lambda *a: calls.append(1))
    torch.manual_seed(0)
    t = now()
    while len(calls) < tokens:          # n_sampled_toks=k samples k+1 tokens, unless the end token comes first
        published.generate(temp=0.7, n_sampled_toks=min(tokens - len(calls), 76) - 1)
    theirs = now() - t
    out["clip_gpt"] = {"tokens": tokens, "sample8_s": round(ours, 2), "tokens_per_s": round(tokens / ours, 1),
                       "published_tokens": len(calls), "published_s": round(theirs, 2),
                       "published_tokens_per_s": round(len(calls) / theirs, 2),
                       "speedup": round(tokens / ours / (len(calls) / theirs), 1)}
    del published
    print(f"clip_gpt {out['clip_gpt']}", file=sys.stderr, flush=True)
    # ClipCap: the project's caption (beam 5, then CLIP re-ranking) vs predict.py's path: raw encode_image,
    # clip_project, generate_beam (no KV cache: the whole sequence every step)
    caption, ours = timed(bundle.captioner.caption, [images[0]], num_beams=5)
    model = clipcap_model.ClipCaptionModel(10, 512, GPT2Config())
    missing, unexpected = model.load_state_dict(torch.load(work / "coco_weights.pt", weights_only=True), strict=False)
    assert not missing and all(k.endswith(("attn.bias", "attn.masked_bias")) for k in unexpected), (missing, unexpected)
    tokenizer = GPT2Tokenizer.from_pretrained(work / "gpt2")
    model.to(device).eval()
    t = now()
    with torch.no_grad():
        embed = model.clip_project(b32.model.encode_image(b32.image_tensor([images[0]]).to(device))).reshape(1, 10, -1)
    published_caption = clipcap_model.generate_beam(model, tokenizer, beam_size=5, embed=embed)[0]
    theirs = now() - t
    # random weights almost never give ".": both run all 67 steps (equal caption lengths show it)
    out["clipcap"] = {"caption_s": round(ours, 2), "caption_chars": len(caption[0]), "published_s": round(theirs, 2),
                      "published_chars": len(published_caption), "speedup": round(theirs / ours, 1)}
    print(f"clipcap {out['clipcap']}", file=sys.stderr, flush=True)
    # one SD 1.5 UNet step at 512x512 (64x64 latents), batch 2: the guided and unguided halves of one image
    unet = bundle.renderer.pipe.unet
    latents, context = (torch.randn(*shape, device=device, dtype=unet.dtype) for shape in ((2, 4, 64, 64), (2, 77, 768)))

    def step():
        unet(latents, 999, encoder_hidden_states=context)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    with torch.no_grad():
        secs = [timed(step)[1] for _ in range(2)]
    out["sd_unet_step_s"] = {"first": round(secs[0], 2), "second": round(secs[1], 2)}
    return out


def run_child(work: Path, mode: str, device: str = "cpu") -> dict:
    """A fresh interpreter (nothing loaded or cached in its memory): its result is its stdout's last line."""
    cmd = [sys.executable, "-m", "benchmarks.bench_published", "--work", str(work), "--child", mode, "--device", device]
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=DEFAULT_WORK, help="where the stand-ins and the bundle go (reused when built)")
    p.add_argument("--out", default="benchmarks/results/published.json")
    p.add_argument("--device", default="cpu", help="where the loaded bundle and the published code run (cuda: a GPU)")
    p.add_argument("--child", choices=("load", "full"), help=argparse.SUPPRESS)   # load: without the renderer
    args = p.parse_args(argv)
    work = Path(args.work).expanduser().resolve()
    # set before huggingface_hub is imported (it reads them once): the stand-ins are the cache's only pieces,
    # and nothing may be downloaded in their place
    os.environ["HF_HUB_CACHE"] = str(work / "hf")
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    torch.set_num_threads(2)
    if args.child:
        print(json.dumps(child(work, full=args.child == "full", device=args.device)), flush=True)
        return
    t0 = now()
    params = build(work)
    report = {"command": " ".join(["python -m", __spec__.name, *sys.argv[1:]]),
              "machine": {"cpus": os.cpu_count(), "torch_threads": 2, "torch": torch.__version__, "device": args.device,
                          "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
                          "loadavg_at_start": os.getloadavg()},
              "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "params": {k: {"stand_in": v, "published": PUBLISHED_PARAMS.get(k)} for k, v in params.items()
                         if k != "build_s"},
              "build_s": params.get("build_s"), "convert": convert_and_assemble(work)}
    print(f"converted {report['convert']}", file=sys.stderr, flush=True)
    report["load_without_renderer"] = run_child(work, "load", args.device)
    full = run_child(work, "full", args.device)
    report["timings"] = full.pop("timings")
    # the pickled CLIPGPT is only loaded in the child: its parameters are counted there
    report["params"]["clip_gpt"] = {"stand_in": report["timings"].pop("clip_gpt_params"),
                                    "published": PUBLISHED_PARAMS["clip_gpt"]}
    report["load_with_renderer"] = full
    report["seconds"] = round(now() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    tm = report["timings"]
    print("params (M)        " + ", ".join(f"{k} {v['stand_in'] / 1e6:.1f} (published {v['published'] / 1e6:.1f})"
                                          for k, v in report["params"].items()))
    print(f"convert/assemble  {report['convert']}")
    for what, r in (("load", full), ("load, no renderer", report["load_without_renderer"])):
        print(f"{what:17s} {r['load_s']} s, RSS {r['rss_gib']} GiB ({r['weights_read']['rss_gib']} once every weight "
              f"is read), peak {r['weights_read']['peak_rss_gib']} GiB")
    g, c = tm["clip_gpt"], tm["clipcap"]
    print(f"CLIP GPT          {g['tokens_per_s']} tok/s vs published {g['published_tokens_per_s']} ({g['speedup']}x)")
    print(f"ClipCap caption   {c['caption_s']} s vs published {c['published_s']} s ({c['speedup']}x)")
    print(f"image encodes/s   ViT-L/14 {tm['vit_l_14_images_per_s']}, ViT-B/32 {tm['vit_b_32_images_per_s']} (batch 8)")
    print(f"SD UNet step      {tm['sd_unet_step_s']} s (512x512, batch 2)")


if __name__ == "__main__":
    main()
