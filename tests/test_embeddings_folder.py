"""Images known only by their embeddings: the folder clip-retrieval's own inference wrote. Explain reads f
from a CSV of image paths and scores beside it, Nearest searches it, both memory-mapped. The images are
deleted first, so every figure comes from the embeddings."""
import shutil

import numpy as np
import pytest
from gradio_client import handle_file

from clipgpt_core.jobs import explain as explain_cli
from clipgpt_core import world
from clipgpt_core.retrieval.embed import embed_with_clip_retrieval
from clipgpt_core.explainers.errors import TargetError
from clipgpt_core.explainers.scores import scores_with_embeddings
from clipgpt_core.retrieval.local import LocalIndex
from clipgpt_core.access import ServerFiles
from clipgpt_core.errors import ClipGPTError
from clipgpt_core.retrieval.nearest import NearestImages
from conftest import launched_app

N = 64


@pytest.fixture(scope="module")
def scored(bundle, tmp_path_factory):
    """N world images scored 1 when the scene has a red object; their clip-retrieval embeddings; a CSV."""
    d = tmp_path_factory.mktemp("scored")
    images, rows = [], []
    for i in range(N):
        ex = world.example(7000 + i, split="any")
        path = d / "images" / f"{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        ex.image.save(path)
        images.append(ex.image)
        rows.append(f"{path},{int(any(o.colour == 'red' for o in ex.scene.objects))}\n")
    emb_dir = embed_with_clip_retrieval(bundle, str(d / "images"), d / "out", num_prepro_workers=1)
    csv = d / "scores.csv"
    csv.write_text("path,score\n" + "".join(rows))
    expected = bundle.clip.encode_images(images)
    shutil.rmtree(d / "images")                      # from here on only the embeddings exist
    return csv, emb_dir, expected, np.array([float(r.rsplit(",", 1)[1]) for r in rows])


def test_rows_come_from_the_embeddings_in_the_csvs_order(scored):
    csv, emb_dir, expected, f = scored
    paths, emb, scores = scores_with_embeddings(csv, emb_dir)
    assert len(paths) == N and np.array_equal(scores, f)
    assert np.allclose(emb, expected, atol=2e-3)          # row i is image i, whatever order inference wrote
    with pytest.raises(ClipGPTError, match="not in the embeddings folder"):
        LocalIndex(emb_dir).embeddings_for(paths[:3] + ["/nowhere/else.png"])
    with pytest.raises(TargetError, match="No embeddings folder"):
        scores_with_embeddings(csv, csv.parent / "missing")


def test_the_command_explains_from_embeddings(scored, capsys):
    csv, emb_dir, *_ = scored
    explain_cli.main(["--csv", str(csv), "--embeddings", str(emb_dir), "--method", "partial", "--top", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert "red" in lines[1], lines


def test_the_explain_tab_explains_from_embeddings(bundle, scored):
    csv, emb_dir, *_ = scored
    with launched_app(bundle) as client:
        table, status, *_ = client.predict(
            target_kind="My scores (CSV)", planted="has_red", clf_output=None, csv_file=handle_file(str(csv)),
            pos_folder="", neg_folder="", pos_files=None, neg_files=None, image_source="Built-in gallery sample",
            n_images=64, image_folder="", method="partial", budget=0, prior_weight=0.01, seed=0,
            embeddings_folder=str(emb_dir), api_name="/explain")
        assert "red" in table["data"][0][0] and f"{N} images" in status
        with pytest.raises(Exception, match="No embeddings folder"):
            client.predict(target_kind="My scores (CSV)", planted="has_red", clf_output=None,
                           csv_file=handle_file(str(csv)), pos_folder="", neg_folder="", pos_files=None,
                           neg_files=None, image_source="Built-in gallery sample", n_images=64, image_folder="",
                           method="partial", budget=0, prior_weight=0.01, seed=0,
                           embeddings_folder=str(emb_dir) + "-gone", api_name="/explain")


def test_nearest_searches_an_embeddings_folder_as_it_is(bundle, scored):
    csv, emb_dir, expected, _ = scored
    hits = NearestImages(bundle).search(text="a red circle", k=5, folder=str(emb_dir))
    text = bundle.clip.encode_texts(["a red circle"])[0]
    best = [str(csv.parent / "images" / f"{i:03d}.png") for i in np.argsort(-(expected @ text))[:5]]
    assert [h.image_path for h in hits] == best          # exact search over the embeddings, nothing re-embedded
    # a shared app shows no image its owner did not allow, even one the embeddings' metadata names
    shared = NearestImages(bundle, files=ServerFiles.shared([emb_dir.parent]))
    assert [h.image_path for h in shared.search(text="a red circle", k=5, folder=str(emb_dir))] == [None] * 5
    with launched_app(bundle) as client:
        assert "Opened the index of 64 images" in client.predict(str(emb_dir), api_name="/index_folder")
        _, status = client.predict(text="a red circle", image=None, text_weight=0.5, k=4, source="My folder",
                                   folder=str(emb_dir), url="", indice_name="shapes", text_mode="raw",
                                   api_name="/search")
        assert status.startswith("4 nearest images")
