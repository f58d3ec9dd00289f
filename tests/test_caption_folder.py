"""Batch captions: `clipgpt caption --folder DIR --out captions.jsonl|.csv` on world images and broken files."""
import csv
import json

import pytest

from clipgpt_core import world
from clipgpt_core.jobs.caption_folder import CaptionOutputError, caption_folder, main
from clipgpt_core.world.captions import parse_caption

N = 20


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """N single-object world images (ground truth kept), a corrupt PNG, an empty JPEG and a text file."""
    d = tmp_path_factory.mktemp("images")
    truth = {}
    for i in range(N):
        ex = world.example(7000 + i, split="any", n_objects=1)
        path = d / ("sub" if i % 2 else ".") / f"{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        ex.image.save(path)
        truth[str(path.resolve())] = ex.scene.objects[0].colour
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 20)
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.txt").write_text("not an image, not listed")
    return d, truth


def test_one_record_per_readable_image_with_the_right_colour_and_resumable(bundle, folder, tmp_path):
    d, truth = folder
    out = tmp_path / "captions.jsonl"
    run = caption_folder(bundle.captioner, d, out, batch_size=8, num_beams=1, progress=False)
    assert run.written == N and run.already == 0
    assert sorted(s.split(":")[0].rsplit("/", 1)[-1] for s in run.skipped) == ["corrupt.png", "empty.jpg"]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["path"] for r in records) == sorted(truth)          # one record per readable image
    assert all(set(r) == {"path", "caption", "similarity"} and -1 <= r["similarity"] <= 1 for r in records)
    colours = [next((p.colour for p in (parse_caption(r["caption"]) or world.Description(())).phrases
                     if p.colour), None) for r in records]
    right = sum(c == truth[r["path"]] for c, r in zip(colours, records)) / N
    assert right >= 0.9, list(zip(colours, [truth[r["path"]] for r in records]))

    # an interrupted run (last record lost) continues: only the missing image is captioned again
    out.write_text("\n".join(out.read_text().splitlines()[:-1]) + "\n")
    again = caption_folder(bundle.captioner, d, out, num_beams=1, progress=False)
    assert (again.written, again.already) == (1, N - 1)
    assert len(out.read_text().splitlines()) == N


def test_csv_output_and_clear_errors(bundle, folder, tmp_path, monkeypatch, capsys):
    d, _ = folder
    sub = tmp_path / "few"                                               # three of the images: fast
    sub.mkdir()
    for i in range(3):
        (sub / f"{i}.png").write_bytes((d / f"{2 * i:03d}.png").read_bytes())
    out = tmp_path / "captions.csv"
    monkeypatch.setattr("clipgpt_core.bundle.load_bundle", lambda *a, **k: bundle)
    main(["--folder", str(sub), "--out", str(out), "--beams", "1"])
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3 and all(r["caption"] and float(r["similarity"]) for r in rows)
    assert "3 captioned, 0 already there" in capsys.readouterr().out
    main(["--folder", str(sub), "--out", str(out)])                      # resumed: nothing left to do
    assert len(list(csv.DictReader(out.open()))) == 3
    with pytest.raises(CaptionOutputError, match=".jsonl or .csv"):
        caption_folder(bundle.captioner, sub, tmp_path / "captions.txt")
    (tmp_path / "other.jsonl").write_text("something else\n")
    with pytest.raises(CaptionOutputError, match="not a caption record"):
        caption_folder(bundle.captioner, sub, tmp_path / "other.jsonl")
    with pytest.raises(SystemExit):
        main(["--folder", str(tmp_path / "missing"), "--out", str(out)])
