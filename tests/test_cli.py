"""The `clipgpt` command: subcommands dispatch to the core, the trainers and the app; bad use is a clear exit."""
import runpy

import pytest

from clipgpt_app import cli


def test_python_dash_m_lists_the_commands(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["clipgpt_app", "--help"])
    runpy.run_module("clipgpt_app", run_name="__main__")             # what `python -m clipgpt_app --help` runs
    out = capsys.readouterr().out
    for command in ("index", "caption", "explain", "serve", "train", "app", "space"):
        assert f"clipgpt {command}" in out


def test_each_subcommand_reaches_its_module(capsys):
    for argv, expected in ((["index", "--help"], "--distribution-strategy"), (["caption", "--help"], "--folder"),
                           (["explain", "--help"], "--positives"), (["train", "clip", "--help"], "--steps"),
                           (["train", "bundle", "--help"], "--stages"), (["serve", "--help"], "--index"),
                           (["space", "--help"], "--out"), (["train", "classifier", "--help"], "--epochs")):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 0
        assert expected in capsys.readouterr().out, argv


def test_bad_use_says_what_to_do(tmp_path, capsys):
    with pytest.raises(SystemExit, match="name a stage, one of clip, prior"):
        cli.main(["train"])
    with pytest.raises(SystemExit, match="unknown command 'idx'"):
        cli.main(["idx"])
    with pytest.raises(SystemExit) as e:
        cli.main(["explain", "--csv", str(tmp_path / "missing.csv")])
    assert e.value.code == 2 and "No CSV file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["index", "--folder", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert e.value.code == 2 and "Not a folder" in capsys.readouterr().err
