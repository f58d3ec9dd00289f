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
    backends = ServerFiles.shared([], ["HTTP://Back.example:1234/"])
    assert backends.check_backend("http://back.example:1234/knn-service") == "http://back.example:1234/knn-service"
    for elsewhere in ("http://back.example:1235", "http://169.254.169.254/latest", "file:///etc/passwd"):
        with pytest.raises(AccessError, match="--allow-backend"):
            backends.check_backend(elsewhere)
    assert ServerFiles().check_backend("http://anywhere:1") == "http://anywhere:1"   # a local app: any
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not is_shared("127.0.0.1") and is_shared("0.0.0.0") and is_shared("127.0.0.1", share=True)
    monkeypatch.setenv("SPACE_ID", "user/clip-gpt")
    assert is_shared("127.0.0.1")


def test_shared_app_indexes_only_allowed_folders(bundle, folders, tmp_path):
    allowed, other = folders
    csv = tmp_path / "scores.csv"
    csv.write_text("".join(f"{other / f'{i}.png'},{i % 2}\n" for i in range(8)))
    files = ServerFiles.shared([allowed], ["http://127.0.0.1:9"])       # port 9 (discard): nothing listens
    with launched_app(bundle, files=files) as client:
        assert "Indexed 8 images" in client.predict(str(allowed), api_name="/index_folder")
        # remote back-ends: only the allowed one is contacted (and then fails as unreachable, not as refused)
        with pytest.raises(Exception, match="--allow-backend http://10.0.0.1:1234"):
            client.predict("a red circle", None, 0.5, 4, "Remote clip-retrieval back-end", "", "http://10.0.0.1:1234",
                           "shapes", "raw", api_name="/search")
        with pytest.raises(Exception) as unreachable:
            client.predict("a red circle", None, 0.5, 4, "Remote clip-retrieval back-end", "", "http://127.0.0.1:9/",
                           "shapes", "raw", api_name="/search")
        assert "allow-backend" not in str(unreachable.value)
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
    from clipgpt_app import main as app
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


def test_a_nul_byte_in_any_path_field_gets_a_clear_message(bundle, tmp_path):
    """Text pasted into a path field can carry a NUL byte, which Python's os functions reject with a bare ValueError."""
    bad = str(tmp_path) + "\x00pasted"
    with launched_app(bundle) as client:
        with pytest.raises(Exception, match="NUL character"):
            client.predict(bad, api_name="/index_folder")
        with pytest.raises(Exception, match="NUL character"):
            client.predict("a red circle", None, 0.5, 4, "My folder", bad, "", "shapes", "raw", api_name="/search")
        with pytest.raises(Exception, match="NUL character"):
            client.predict(target_kind="Planted function", method="dissect", api_name="/explain",
                           **(EXPLAIN | {"image_source": "My images (folder)", "image_folder": bad}))
        *_, saved = client.predict(target_kind="Planted function", method="dissect", api_name="/explain", **EXPLAIN)
        with pytest.raises(Exception, match="NUL character"):
            client.predict(handle_file(str(saved)), bad, None, api_name="/explain_apply")
        gallery, _ = client.predict("a red circle", None, 0.5, 2, "Built-in gallery", "", "", "shapes", "raw",
                                    api_name="/search")
        assert len(gallery) == 2                                     # and the app is still up
