"""The layers hold: the core imports neither the trainers, the benchmarks, the tests nor the app; no project
code edits sys.path; no module is over 450 lines. Read from the source (ast), so it costs no imports."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = [p for d in ("clipgpt_core", "clipgpt_train", "benchmarks", "demo", "tests") for p in (ROOT / d).rglob("*.py")]
PROJECT.append(ROOT / "app.py")
SYS_PATH_EDITS = ("sys.path." + "insert", "sys.path." + "append")      # spelled apart: this file is checked too


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_core_never_imports_training_benchmarks_tests_or_the_app():
    for path in (ROOT / "clipgpt_core").rglob("*.py"):
        wrong = {n for n in imported(path) if n.split(".")[0] in ("clipgpt_train", "benchmarks", "tests", "demo",
                                                                  "app", "gradio")}
        assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}"


def test_training_imports_only_downwards():
    for path in (ROOT / "clipgpt_train").rglob("*.py"):
        wrong = {n for n in imported(path) if n.split(".")[0] in ("benchmarks", "tests", "demo", "app")}
        assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}"


def test_no_sys_path_edits_and_short_modules():
    for path in PROJECT:
        text = path.read_text()
        assert not any(edit in text for edit in SYS_PATH_EDITS), path.relative_to(ROOT)
        assert len(text.splitlines()) <= 450, path.relative_to(ROOT)


def test_pyproject_ships_every_package():
    """setuptools' package list is explicit: a new subpackage left out of it is missing from `pip install .`."""
    import tomllib
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    for top in ("clipgpt_core", "clipgpt_train", "demo"):
        for init in (ROOT / top).rglob("__init__.py"):
            name = ".".join(init.parent.relative_to(ROOT).parts)
            assert name in listed, f"{name} is not in pyproject.toml's [tool.setuptools] packages"
