"""The layers hold, read from the source (ast), so it costs no imports:
- the order: core <- training <- app (clipgpt_app, its `clipgpt` command) and benchmarks/tests; nothing imports
  upwards, no import cycle inside the core, and no tab imports another;
- every import is visible: no import_module/__import__ outside the core's lazy exports (whose targets are checked);
- no private name (`_x`) is used outside the module that defines it;
- no project code edits sys.path; no module is over 450 lines; pyproject ships every package."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("clipgpt_core", "clipgpt_train", "clipgpt_app", "benchmarks", "tests")
PROJECT = [p for d in PACKAGES for p in (ROOT / d).rglob("*.py")] + [ROOT / "app.py"]
SYS_PATH_EDITS = ("sys.path." + "insert", "sys.path." + "append")      # spelled apart: this file is checked too
DYNAMIC = ("import_" + "module", "__imp" + "ort__")
USER_CODE = {ROOT / "clipgpt_core" / "explainers" / "units.py"}     # builds the user's own model class, by its name


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, names taken from it) for every import in the file, relative ones resolved."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.append((mod, [a.name for a in node.names]))
    return out


def imported(path: Path) -> set[str]:
    return {m for m, _ in imports(path)}


def test_the_core_never_imports_training_benchmarks_tests_or_the_app():
    for path in (ROOT / "clipgpt_core").rglob("*.py"):
        wrong = {n for n in imported(path) if n.split(".")[0] in ("clipgpt_train", "clipgpt_app", "benchmarks", "tests",
                                                                  "app", "gradio")}
        assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}"


def test_training_imports_only_downwards():
    for path in (ROOT / "clipgpt_train").rglob("*.py"):
        wrong = {n for n in imported(path) if n.split(".")[0] in ("benchmarks", "tests", "clipgpt_app", "app")}
        assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}"


def test_no_tab_imports_another():
    tabs = {module_name(p) for p in (ROOT / "clipgpt_app" / "tabs").glob("*.py") if p.name != "__init__.py"}
    for path in (ROOT / "clipgpt_app" / "tabs").glob("*.py"):
        me = module_name(path)
        for mod, names in imports(path):
            others = {mod} | {f"{mod}.{n}" for n in names}
            assert not (others & tabs) - {me}, f"{path.relative_to(ROOT)} imports another tab: {others & tabs}"


def test_no_import_cycle_in_the_core():
    modules = {module_name(p): p for p in (ROOT / "clipgpt_core").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for mod, names in imports(path):
            deps |= {d for d in [mod, *(f"{mod}.{n}" for n in names)] if d in modules and d != name}
        graph[name] = deps - {name.rpartition(".")[0]} if name.count(".") > 1 else deps
    done, stack = set(), []

    def visit(node):
        if node in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(node):] + [node]))
        if node in done:
            return
        stack.append(node)
        for d in graph[node]:
            if not (d in modules and modules[d].name == "__init__.py"):    # a package's face re-exports below it
                visit(d)
        stack.pop()
        done.add(node)
    for n in graph:
        visit(n)


def test_every_import_is_visible():
    """No project module is loaded by name at run time (a third-party one may be, as a literal)."""
    for path in PROJECT:
        if path == ROOT / "clipgpt_core" / "lazy.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in DYNAMIC:
                if path in USER_CODE:
                    continue
                arg = node.args[0] if node.args else None
                literal = isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                assert literal and not arg.value.startswith((".", *PACKAGES, "app")), \
                    f"{path.relative_to(ROOT)}:{node.lineno} imports a module by a name known only at run time"


def test_lazy_exports_name_core_modules():
    for init in (ROOT / "clipgpt_core").rglob("__init__.py"):
        for node in ast.walk(ast.parse(init.read_text())):
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_WHERE":
                for value in ast.literal_eval(node.value).values():
                    target = init.parent / Path(*value.partition(":")[0].split("."))
                    assert target.with_suffix(".py").is_file() or (target / "__init__.py").is_file(), value


def test_no_private_name_crosses_modules():
    project = {module_name(p) for p in PROJECT}
    for path in PROJECT:
        aliases = {}
        for mod, names in imports(path):
            if mod.split(".")[0] not in {m.split(".")[0] for m in project}:
                continue
            for n in names:
                assert not (n.startswith("_") and not n.startswith("__")), \
                    f"{path.relative_to(ROOT)} imports the private {mod}.{n}"
                aliases[n] = mod
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                assert not (node.attr.startswith("_") and not node.attr.startswith("__")), \
                    f"{path.relative_to(ROOT)}:{node.lineno} uses the private {node.value.id}.{node.attr}"


def test_no_sys_path_edits_and_short_modules():
    for path in PROJECT:
        text = path.read_text()
        assert not any(edit in text for edit in SYS_PATH_EDITS), path.relative_to(ROOT)
        assert len(text.splitlines()) <= 450, path.relative_to(ROOT)


def test_pyproject_ships_every_package():
    """setuptools' package list is explicit: a new subpackage left out of it is missing from `pip install .`;
    the UI goes in under a clipgpt name, and no generic top-level module (app, demo) is installed."""
    import tomllib
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    for top in ("clipgpt_core", "clipgpt_train", "clipgpt_app"):
        for init in (ROOT / top).rglob("__init__.py"):
            name = ".".join(init.parent.relative_to(ROOT).parts)
            assert name in listed, f"{name} is not in pyproject.toml's [tool.setuptools] packages"
    assert all(p.startswith("clipgpt") for p in listed) and not setuptools.get("py-modules")


def test_one_home_for_each_piece_of_knowledge():
    """The image suffixes live in images.py, the example and asset folders in paths.py, "is this a ShapesWorld
    bundle?" in Bundle.is_shapes_world, the reading of captions in world/captions.py."""
    homes = {".jpeg": "clipgpt_core/images.py", "__file__).resolve().parents": "clipgpt_core/paths.py",
             "def is_shapes_world": "clipgpt_core/bundle.py", "PLURALS.items()": "clipgpt_core/world/captions.py"}
    for path in PROJECT:
        if path.parts[len(ROOT.parts)] in ("tests", "benchmarks"):
            continue
        text = path.read_text()
        for needle, home in homes.items():
            if needle in text and path != ROOT / home:
                raise AssertionError(f"{path.relative_to(ROOT)} holds {needle!r}, whose home is {home}")
