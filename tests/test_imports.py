"""The package's import graph has no cycle: every module can be read bottom-up.

Walks each library module's ``import`` statements with ``ast`` (module-level AND inside functions,
so a cycle hidden behind a function-level import fails too). ``cnnviz.cli`` and ``__main__`` are
the top of the graph (they may import lazily for ``--help`` speed) and are left out.
"""
from __future__ import annotations

import ast
from pathlib import Path

import cnnviz

ROOT = Path(cnnviz.__file__).parent
TOP = ("cnnviz.cli", "cnnviz.__main__")


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def import_graph(root: Path, package: str = "cnnviz") -> dict[str, set[str]]:
    """{module: modules of ``package`` it imports anywhere in its source}."""
    files = {_module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_pkg = path.name == "__init__.py"
        here = name if is_pkg else name.rpartition(".")[0]  # the package relative imports start from
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # `from pkg import name`: an edge to pkg.name when that is a module, else to pkg
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in files else mod for a in node.names]
            for t in targets:
                # `import cnnviz.a.b` / `from cnnviz.a.b import x`: the deepest module of ours named
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]], exclude: tuple[str, ...] = ()) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None. Modules starting with ``exclude`` are ignored."""
    keep = {m: {d for d in deps if not d.startswith(exclude)} for m, deps in graph.items() if not m.startswith(exclude)}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in sorted(keep.get(m, ())):
            if state.get(d) == 1:
                return path[path.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(keep):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_library_has_no_import_cycle():
    graph = import_graph(ROOT)
    # the walk sees both module-level and function-level imports of every form used
    assert "cnnviz.layers" in graph["cnnviz.capture"]
    assert "cnnviz.capture" in graph["cnnviz.fields"]
    cycle = find_cycle(graph, exclude=TOP)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_low_modules_stay_low():
    graph = import_graph(ROOT)
    assert graph["cnnviz.errors"] == set()
    assert graph["cnnviz.util"] <= {"cnnviz.errors"}
    # the static receptive-field analysis never runs hooks; the empirical fields do
    assert "cnnviz.capture" not in graph["cnnviz.rf"]


def test_cycle_check_catches_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import thing\n")
    (pkg / "b.py").write_text("def f():\n    from .sub.c import other\n    return other\nthing = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("import pkg.a\nother = 2\n")
    (pkg / "cli.py").write_text("from . import a\n")
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.cli"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]
    (pkg / "sub" / "c.py").write_text("other = 2\n")
    assert find_cycle(import_graph(pkg, "pkg")) is None


def layer_violations(graph: dict[str, set[str]], low: str, high: str) -> list[str]:
    """Edges from modules of package ``low`` (or ``low`` itself) to modules of package ``high``."""
    def inside(m: str, pkg: str) -> bool:
        return m == pkg or m.startswith(pkg + ".")

    return sorted(f"{m} -> {d}" for m, deps in graph.items() if inside(m, low) for d in deps if inside(d, high))


def test_report_does_not_call_back_into_jobs():
    # cli -> jobs -> report/domain: the site assembles what jobs produce (jobs/report.py runs them)
    bad = layer_violations(import_graph(ROOT), "cnnviz.report", "cnnviz.jobs")
    assert not bad, "report/ imports jobs/: " + ", ".join(bad)


def test_domain_modules_import_neither_jobs_nor_cli():
    graph = import_graph(ROOT)
    domain = {m: d for m, d in graph.items() if not m.startswith(("cnnviz.cli", "cnnviz.jobs", "cnnviz.__main__"))}
    bad = [v for m in ("cnnviz.jobs", "cnnviz.cli") for v in layer_violations(domain, "cnnviz", m)]
    assert not bad, "a domain module imports the layer above it: " + ", ".join(bad)


def test_layer_check_sees_a_report_to_jobs_import(tmp_path):
    pkg = tmp_path / "pkg"
    for sub in ("jobs", "report"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "jobs" / "top.py").write_text("from ..report import build\n")
    (pkg / "report" / "build.py").write_text("def f():\n    from ..jobs.top import run\n")
    graph = import_graph(pkg, "pkg")
    assert layer_violations(graph, "pkg.report", "pkg.jobs") == ["pkg.report.build -> pkg.jobs.top"]
    assert layer_violations(graph, "pkg.jobs", "pkg.report") == ["pkg.jobs.top -> pkg.report.build"]


def test_error_classes_live_in_errors():
    # the exception family is one module; private control-flow signals (capture._StopForward) and
    # the click layer's own exception (cli.common.CommandError) are the exceptions to the rule
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        mod = _module_name(path, ROOT, "cnnviz")
        if mod in ("cnnviz.errors", "cnnviz.cli.common"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = [ast.unparse(b) for b in node.bases]
                if any(b.endswith(("Error", "Exception")) for b in bases):
                    found.append(f"{mod}.{node.name}")
    assert not found, "exception classes outside cnnviz/errors.py: " + ", ".join(found)


def test_moved_errors_keep_their_old_import_names():
    from cnnviz import errors, graph, index, rf

    assert graph.TraceError is errors.TraceError and issubclass(errors.TraceError, errors.ModelError)
    assert rf.RFError is errors.RFError and issubclass(errors.RFError, errors.ModelError)
    assert index.IndexStoreError is errors.IndexStoreError and errors.IndexStoreError.exit_code == 1
