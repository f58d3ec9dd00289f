"""Caption every image in a folder into a JSONL or CSV file: one record per image with its `path`,
`caption` and `similarity` (the CLIP cosine of caption and image).

    clipgpt caption --folder ~/photos --out captions.jsonl     # or captions.csv
    clipgpt caption --folder ~/photos --out captions.csv --beams 5

Resumable: records are appended a batch at a time, and a run skips the paths its output already
holds, so an interrupted run continues where it stopped. Unreadable files (corrupt, truncated,
empty, not an image, too large) are skipped and reported; they are tried again on the next run.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..errors import ClipGPTError
from ..images import BadImageError, load_image
from ..retrieval.local import folder_images

FIELDS = ("path", "caption", "similarity")


class CaptionOutputError(ClipGPTError, ValueError):
    """An output file this command cannot write or resume (unknown format, unreadable records)."""


@dataclass
class CaptionRun:
    written: int = 0                                  # records added by this run
    already: int = 0                                  # images the output held before it
    skipped: list[str] = field(default_factory=list)  # "path: why" for each unreadable file


def _format(out: Path) -> str:
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("jsonl", "csv"):
        raise CaptionOutputError(f"Write captions to a .jsonl or .csv file, not {out.name}")
    return fmt


def done_paths(out: Path) -> set[str]:
    """The paths an earlier run already wrote to `out` (empty if it does not exist)."""
    if not out.is_file():
        return set()
    if _format(out) == "csv":
        with out.open(newline="", encoding="utf-8") as f:
            return {row["path"] for row in csv.DictReader(f) if row.get("path")}
    done = set()
    for i, line in enumerate(out.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            done.add(json.loads(line)["path"])
        except (json.JSONDecodeError, KeyError, TypeError):
            # a line cut short by an interrupted run is the last one; anything else is not our file
            raise CaptionOutputError(f"{out} line {i} is not a caption record; pick another --out") from None
    return done


def caption_folder(captioner, folder: str | Path, out: str | Path, batch_size: int = 16, num_beams: int = 3,
                   progress: bool = True) -> CaptionRun:
    """Caption the images under `folder` (recursively) into `out` (.jsonl or .csv) with a bundle's
    captioner; returns what this run wrote and skipped."""
    out = Path(out).expanduser()
    fmt = _format(out)
    paths = [str(Path(p).resolve()) for p in folder_images(folder)]
    done = done_paths(out)
    todo = [p for p in paths if p not in done]
    run = CaptionRun(already=len(paths) - len(todo))
    out.parent.mkdir(parents=True, exist_ok=True)
    new_csv = fmt == "csv" and not (out.is_file() and out.stat().st_size > 0)
    with out.open("a", newline="", encoding="utf-8") as f, \
            tqdm(total=len(todo), desc="caption images", unit="img", disable=not progress) as bar:
        writer = csv.DictWriter(f, fieldnames=FIELDS) if fmt == "csv" else None
        if new_csv:
            writer.writeheader()
        for start in range(0, len(todo), batch_size):
            images, kept = [], []
            for p in todo[start:start + batch_size]:
                try:
                    images.append(load_image(p))
                    kept.append(p)
                except BadImageError as e:
                    run.skipped.append(f"{p}: {e}")
            # the best candidate (top=1) carries its CLIP similarity already: the record's
            for p, (best,) in zip(kept, captioner.candidates(images, num_beams=num_beams, top=1) if images else []):
                record = {"path": p, "caption": best["caption"], "similarity": round(float(best["clip_similarity"]), 4)}
                if writer:
                    writer.writerow(record)
                else:
                    f.write(json.dumps(record) + "\n")
            f.flush()           # a batch at a time: an interrupted run loses at most one batch
            run.written += len(kept)
            bar.update(min(batch_size, len(todo) - start))
    return run


def main(argv=None):
    p = argparse.ArgumentParser(prog="clipgpt caption", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", required=True, help="a folder of images (searched recursively)")
    p.add_argument("--out", required=True, help="captions.jsonl or captions.csv (appended to: resumable)")
    p.add_argument("--bundle", default=None, help="built-in name, bundle directory, or open_clip:ARCH/TAG")
    p.add_argument("--beams", type=int, default=3, help="beam width of the captioner (default 3)")
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args(argv)
    from ..bundle import load_bundle
    try:
        run = caption_folder(load_bundle(args.bundle).captioner, args.folder, args.out, args.batch_size, args.beams)
    except ClipGPTError as e:
        p.exit(2, f"clipgpt caption: {e}\n")
    for s in run.skipped:
        logging.warning("skipped %s", s)
    print(f"{args.out}: {run.written} captioned, {run.already} already there, {len(run.skipped)} unreadable skipped")


if __name__ == "__main__":
    main()
