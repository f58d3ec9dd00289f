"""A shared app reads only the server folders its owner allowed, after resolving .. and symlinks."""
import pytest
from conftest import launched_app
from gradio_client import handle_file
from test_explain import EXPLAIN

from clipgpt_core import world
from clipgpt_core.access import AccessError, ServerFiles, is_shared


@pytest.fixture
def folders(tmp_path):
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    for d in (allowed, other):
        d.mkdir()
        for i in range(8):
            world.example(i).image.save(d / f"{i}.png")
    (allowed / "escape").symlink_to(other, target_is_directory=True)
    return allowed, other


def test_policy(folders, monkeypatch):
    allowed, other = folders
    files = ServerFiles.shared([allowed])
    assert files.check(allowed) == allowed.resolve()
    assert files.check(allowed / "0.png") == (allowed / "0.png").resolve()
    for outside in (other, allowed / ".." / "other", allowed / "escape", "/etc"):
        with pytest.raises(AccessError, match="--allow-dir"):
            files.check(outside)
    with pytest.raises(AccessError, match="reading folders on its server is off"):
        ServerFiles.shared([]).check(allowed)
    assert ServerFiles().check(other) == other.resolve()          # a local app reads anything
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not is_shared("127.0.0.1") and is_shared("0.0.0.0") and is_shared("127.0.0.1", share=True)
    monkeypatch.setenv("SPACE_ID", "user/clip-gpt")
    assert is_shared("127.0.0.1")


def test_shared_app_indexes_only_allowed_folders(bundle, folders, tmp_path):
    allowed, other = folders
    csv = tmp_path / "scores.csv"
    csv.write_text("".join(f"{other / f'{i}.png'},{i % 2}\n" for i in range(8)))
    with launched_app(bundle, files=ServerFiles.shared([allowed])) as client:
        assert "Indexed 8 images" in client.predict(str(allowed), api_name="/index_folder")
        for outside in (str(other), str(allowed / ".." / "other"), str(allowed / "escape")):
            with pytest.raises(Exception, match="outside the folders this shared app may read"):
                client.predict(outside, api_name="/index_folder")
        with pytest.raises(Exception, match="outside the folders"):
            client.predict("a red circle", None, 0.5, 4, "My folder", str(other), "", "shapes", "raw",
                           api_name="/search")
        # Explain: a CSV upload may not name images outside the allowed folders, nor may a typed folder
        with pytest.raises(Exception, match="outside the folders"):
            client.predict(target_kind="My scores (CSV)", method="dissect", api_name="/explain",
                           **(EXPLAIN | {"csv_file": handle_file(str(csv))}))
        with pytest.raises(Exception, match="outside the folders"):
            client.predict(target_kind="Planted function", method="dissect", api_name="/explain",
                           **(EXPLAIN | {"image_source": "My images (folder)", "image_folder": str(other)}))
        # a saved explanation may be applied only to an allowed folder
        *_, saved = client.predict(target_kind="Planted function", method="dissect", api_name="/explain", **EXPLAIN)
        with pytest.raises(Exception, match="outside the folders"):
            client.predict(handle_file(str(saved)), str(other), None, api_name="/explain_apply")
        rows, *_ = client.predict(handle_file(str(saved)), str(allowed), None, api_name="/explain_apply")
        assert len(rows["data"]) == 8


def test_a_space_reads_only_its_allow_dirs(folders, monkeypatch):
    """app.py's policy: with SPACE_ID set even a loopback app is shared; --allow-dir A opens A, not A/../B."""
    import app
    allowed, other = folders
    monkeypatch.setenv("SPACE_ID", "user/clip-gpt")
    files = app.server_files("127.0.0.1", False, [str(allowed)])
    assert files.check(allowed / "3.png") == (allowed / "3.png").resolve()
    for outside in (other, allowed / ".." / "other", allowed / "escape"):
        with pytest.raises(AccessError, match=f"--allow-dir {other.resolve()}"):
            files.check(outside)
    with pytest.raises(AccessError, match="--allow-dir"):
        app.server_files("127.0.0.1", False, []).check(allowed)
    monkeypatch.delenv("SPACE_ID")
    assert app.server_files("127.0.0.1", False, []).check(other) == other.resolve()
