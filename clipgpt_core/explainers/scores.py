"""The user's own function to explain: scores from a CSV of image paths, from folders of positives and
negatives, or beside an embeddings folder; each checked (numbers, one per image, not constant, enough)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..access import ServerFiles
from ..images import IMAGE_SUFFIXES, BadImageError, load_image
from .errors import TargetError

MIN_IMAGES = 8            # fewer images than this cannot be split into fit / held-out halves usefully


def check_scores(scores, n_images: int | None = None, min_images: int = MIN_IMAGES) -> np.ndarray:
    """Scores as a float array, or a TargetError naming the problem (NaN, constant, too few, a
    length that does not match the images)."""
    try:
        f = np.asarray(scores, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise TargetError(f"Scores must be numbers: {e}") from None
    if n_images is not None and len(f) != n_images:
        raise TargetError(f"{len(f)} scores for {n_images} images: give exactly one score per image")
    if len(f) < min_images:
        raise TargetError(f"Only {len(f)} image(s): explaining a function needs at least {min_images} "
                          f"(half to fit, half to check)")
    bad = ~np.isfinite(f)
    if bad.any():
        raise TargetError(f"{int(bad.sum())} score(s) are NaN or infinite (first at position {int(np.argmax(bad))}); "
                          f"remove those images or give them a number")
    if np.ptp(f) == 0:
        raise TargetError(f"All {len(f)} scores are equal ({f[0]:g}): a constant function has nothing to explain")
    return f


def _readable(path: str | Path, where: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise TargetError(f"{where}: no image file at {p}")
    try:
        load_image(p)
    except BadImageError as e:     # corrupt / not an image: the user's file, say which row or folder
        raise TargetError(f"{where}: cannot read {p} as an image ({e})") from None
    return str(p)


def scores_from_csv(path: str | Path, min_images: int = MIN_IMAGES, files: ServerFiles = ServerFiles(),
                    open_images: bool = True) -> tuple[list[str], np.ndarray]:
    """A CSV of image paths and scores (two columns; a header row is optional; relative paths are read
    from the CSV's folder) -> (paths, scores). `files` says which server folders the paths may name.
    open_images=False: the paths only name rows of an embeddings folder (scores_with_embeddings); no
    image is opened, so a million rows cost no image reads."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TargetError(f"No CSV file at {path}")
    try:
        rows = [r for r in csv.reader(path.read_text(encoding="utf-8", errors="replace").splitlines()) if any(c.strip() for c in r)]
    except csv.Error as e:
        raise TargetError(f"{path.name} is not a readable CSV: {e}") from None
    if rows and len(rows[0]) >= 2:
        try:
            float(rows[0][1])
        except ValueError:
            rows = rows[1:]                 # a header
    paths, scores = [], []
    for i, r in enumerate(rows, start=1):
        if len(r) < 2:
            raise TargetError(f"{path.name} line {i}: expected two columns, image path and score; got {r!r}")
        try:
            scores.append(float(r[1]))
        except ValueError:
            raise TargetError(f"{path.name} line {i}: the score {r[1]!r} is not a number") from None
        p = Path(r[0].strip()).expanduser()
        p = files.check(p if p.is_absolute() else path.parent / p, "image")
        paths.append(_readable(p, f"{path.name} line {i}") if open_images else str(p))
    return paths, check_scores(scores, len(paths), min_images)


def scores_with_embeddings(csv_path: str | Path, embeddings_dir: str | Path,
                           files: ServerFiles = ServerFiles()) -> tuple[list[str], np.ndarray, np.ndarray]:
    """A CSV of image paths and scores, and the embeddings folder `clip-retrieval inference` (or `clipgpt
    index`) wrote for those images -> (paths, (N, D) embeddings, scores), read from the memory-mapped
    embeddings: f over a million images needs neither the images nor their embeddings in memory at once."""
    from ..retrieval.local import LocalIndex
    paths, f = scores_from_csv(csv_path, files=files, open_images=False)
    folder = files.check(str(embeddings_dir).strip(), "folder")
    if not folder.is_dir():
        raise TargetError(f"No embeddings folder at {folder}")
    return paths, LocalIndex(folder).embeddings_for(paths), f


def images_in(folder_or_files, what: str, files: ServerFiles = ServerFiles()) -> list[str]:
    """A folder's images (checked against `files`), or a list of image files (uploads)."""
    if isinstance(folder_or_files, (str, Path)):
        folder = files.check(folder_or_files)
        if not folder.is_dir():
            raise TargetError(f"{what}: not a folder: {folder}")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise TargetError(f"{what}: no images in {folder}")
    else:
        files = list(folder_or_files or [])
        if not files:
            raise TargetError(f"{what}: no images given")
    return [_readable(p, what) for p in files]


def scores_from_folders(positives, negatives, min_images: int = MIN_IMAGES,
                        files: ServerFiles = ServerFiles()) -> tuple[list[str], np.ndarray]:
    """A folder (or list of files) of positives against one of negatives -> (paths, 1/0 scores)."""
    pos, neg = images_in(positives, "Positives", files), images_in(negatives, "Negatives", files)
    return pos + neg, check_scores([1.0] * len(pos) + [0.0] * len(neg), None, min_images)
