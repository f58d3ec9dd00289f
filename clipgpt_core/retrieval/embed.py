"""Embed a folder (or webdataset shards) at any scale: clip-retrieval's own inference with a bundle's CLIP,
in one process or on Spark; clipgpt_core.retrieval.local then indexes it, in the layout `clip back` serves.

    clipgpt index --folder ~/photos --out ~/photos-index
    clipgpt index --folder ~/photos --out ~/photos-index --distribution-strategy pyspark
    clipgpt index --input-format webdataset --folder "shards/{00000..00099}.tar" --out idx --distribution-strategy pyspark

    OUT/embeddings/img_emb/img_emb_*.npy, metadata/metadata_*.parquet   what `clip-retrieval inference` writes
    OUT/index/image.index, index/metadata/                            served by `clip back` (clipgpt_core.retrieval.serve)
    OUT/skipped.txt                                                   files the reader could not decode

How our CLIP reaches clip-retrieval: its inference loads models through all_clip, which picks a loader
by the model name's prefix. We add a "clipgpt:" loader (a saved CLIP folder -> our model in eval mode,
its preprocessing, its tokenizer). Spark runs clip-retrieval's worker in other Python processes, which
never import this package by themselves; so the model name we pass is a `ModelSpec`, a str that
registers the loader wherever it is unpickled, which is how Spark hands the worker its arguments.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import ClipGPTError
from ..images import IMAGE_SUFFIXES
from ..paths import PACKAGE_PARENT

PREFIX = "clipgpt:"


class InferenceError(ClipGPTError, RuntimeError):
    """clip-retrieval's inference cannot run on this input or setting; the message says why."""


class ModelSpec(str):
    """"clipgpt:/abs/path/to/clip": pickles as a call that registers our all_clip loader, then gives the str."""

    def __reduce__(self):
        return _registered, (str(self),)


def _registered(spec: str) -> str:
    register()
    return spec


def register() -> None:
    """Teach all_clip (clip-retrieval's model loader) the "clipgpt:" prefix, once per process."""
    from all_clip import main as all_clip_main
    registry = all_clip_main._CLIP_REGISTRY
    if PREFIX not in registry:
        # all_clip tries the prefixes in order and its last one, "" (OpenAI CLIP), matches any name
        entries = dict(registry)
        registry.clear()
        registry.update({PREFIX: _load_for_all_clip, **entries})


class _Preprocess:
    """Our image preprocessing behind the same RGB conversion as load_image (transparency onto white,
    16-bit and CMYK handled). Any failure is an OSError, which clip-retrieval's reader skips."""

    def __init__(self, preprocess):
        self.preprocess = preprocess

    def __call__(self, image):
        from ..images import to_rgb
        try:
            return self.preprocess(to_rgb(image))
        except OSError:
            raise
        except Exception as e:     # a decoder's error on a broken file: skip it, do not stop the job
            raise OSError(f"unreadable image ({type(e).__name__}: {e})") from e


def _load_for_all_clip(clip_dir: str, use_jit: bool, device: str, clip_cache_path):
    from ..models.clip import load_clip
    clip = load_clip(clip_dir, device=device)   # in eval mode: all_clip's warm-up batch must not touch BatchNorm
    return clip.model, _Preprocess(clip.preprocess), clip.tokenizer


def model_spec(bundle) -> str:
    """The clip_model name clip-retrieval gets for a bundle's CLIP."""
    if bundle.path is None:              # open_clip:ARCH/TAG: all_clip loads those itself
        return bundle.name
    return ModelSpec(PREFIX + str((bundle.path / bundle.manifest["components"]["clip"]["path"]).resolve()))


def _spark_session(workers: int, memory: str):
    """The active SparkSession (spark-submit, a notebook), or a local one with `workers` cores."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise InferenceError("--distribution-strategy pyspark needs pyspark: pip install pyspark==4.3.0 "
                             "(and Java 17)") from None
    spark = SparkSession.getActiveSession()
    if spark is None:
        # Spark's Python workers are new processes: the same interpreter, finding this package where this
        # process found it (installed or in a checkout)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")) if p)
        spark = (SparkSession.builder.master(f"local[{workers}]").appName("clipgpt-index")
                 .config("spark.driver.memory", memory).getOrCreate())
    return spark


def embed_with_clip_retrieval(bundle, source: str, out: str | Path, distribution_strategy: str = "sequential",
                              input_format: str = "files", batch_size: int = 64, num_prepro_workers: int = 2,
                              write_batch_size: int = 10**6, spark_workers: int | None = None) -> Path:
    """Embed `source` (a folder, or webdataset shards with input_format="webdataset") with the bundle's
    CLIP through clip_retrieval.clip_inference into OUT/embeddings, which it returns (index it with
    clipgpt_core.retrieval.faiss_index.build_faiss_index). write_batch_size images a partition: Spark runs one task a
    partition."""
    out = Path(out).expanduser().resolve()
    if input_format == "files":
        source = str(Path(source).expanduser().resolve())
        if not Path(source).is_dir():
            raise InferenceError(f"Not a folder: {source}")
    if distribution_strategy not in ("sequential", "pyspark"):
        raise InferenceError(f"--distribution-strategy is sequential or pyspark, not {distribution_strategy!r}")
    emb_dir = out / "embeddings"
    if emb_dir.exists():
        import shutil
        shutil.rmtree(emb_dir)   # clip-retrieval appends to a folder; a rerun starts clean
    register()
    if distribution_strategy == "pyspark":
        _spark_session(spark_workers or os.cpu_count() or 2, "4G")
    from clip_retrieval.clip_inference.main import main as clip_inference
    try:
        clip_inference(input_dataset=source, output_folder=str(emb_dir), input_format=input_format,
                       clip_model=model_spec(bundle), distribution_strategy=distribution_strategy,
                       batch_size=batch_size, num_prepro_workers=num_prepro_workers, enable_text=False,
                       write_batch_size=write_batch_size, use_jit=False)
    except ValueError as e:
        if "no sample found" not in str(e):
            raise
        raise InferenceError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) to embed in {source}") from e
    parts = sorted((emb_dir / "metadata").glob("*.parquet"))
    if not parts:
        raise InferenceError(f"No readable images in {source}")
    if input_format == "files":
        _report_skipped(source, parts, out / "skipped.txt")
    return emb_dir


def _report_skipped(folder: str, parts: list[Path], report: Path) -> None:
    """The files clip-retrieval's reader listed but could not decode, into OUT/skipped.txt."""
    import pandas as pd
    from clip_retrieval.clip_inference.reader import folder_to_keys
    _, _, images, _ = folder_to_keys(folder, enable_text=False)
    embedded = set(pd.concat([pd.read_parquet(p, columns=["image_path"]) for p in parts])["image_path"])
    skipped = sorted(str(p) for p in images.values() if str(p) not in embedded)
    report.write_text("".join(f"{p}\n" for p in skipped))
    if skipped:
        print(f"skipped {len(skipped)} unreadable files (listed in {report})", file=sys.stderr)

