"""The layers the README states: v2a < frozen < pipeline < trainer < infer | scoring < lab.

Every import counts, lazy ones inside functions included (v2a/code.py follows them into a stage's code fingerprint);
imports under ``if TYPE_CHECKING:`` do not. A module imports only from its own package and the packages below it,
and no modules import each other in a loop.
"""

from __future__ import annotations

from pathlib import Path

from v2a.code import imported_names

ROOT = Path(__file__).resolve().parent.parent
LAYER = {"v2a": 0, "frozen": 1, "pipeline": 2, "trainer": 3, "infer": 4, "scoring": 4, "lab": 5}


def project_modules() -> dict[str, Path]:
    """{dotted module name: file} of every module of the layered packages."""
    out = {}
    for package in LAYER:
        for f in sorted((ROOT / package).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imports_of(modules: dict[str, Path]) -> dict[str, set[str]]:
    """{module: the project modules it imports} (``from a import b`` counts as ``a.b`` when that is a module)."""
    graph = {}
    for name, f in modules.items():
        found = imported_names(f.read_text(encoding="utf-8"), name, f.name == "__init__.py")
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import of a module from its own layer's sibling package or from a layer above."""
    wrong = []
    for name, deps in sorted(graph.items()):
        here = name.split(".")[0]
        for dep in sorted(deps):
            there = dep.split(".")[0]
            if there != here and LAYER[there] >= LAYER[here]:
                wrong.append(f"{name} -> {dep}")
    return wrong


def cycles_of(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import loop found by a depth-first walk (each as its modules, the first repeated at the end)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return cycles


def test_imports_follow_the_layers():
    modules = project_modules()
    assert "lab.cli" in modules and "v2a.cli" not in modules
    assert layer_violations(imports_of(modules)) == []


def test_no_import_cycles():
    assert cycles_of(imports_of(project_modules())) == []


def test_the_rules_catch_a_lazy_upward_import_a_sibling_import_and_a_loop():
    lazy = imported_names("def f():\n    from infer.generate import Generator\n", "trainer.x", False)
    assert "infer.generate" in lazy
    graph = {"trainer.x": {"infer.generate", "frozen.cavp"}, "scoring.gallery": {"infer.spectrogram"},
             "infer.generate": set(), "frozen.cavp": set(), "infer.spectrogram": set()}
    assert layer_violations(graph) == ["scoring.gallery -> infer.spectrogram", "trainer.x -> infer.generate"]
    assert cycles_of({"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "a.w": {"a.x"}}) == [["a.x", "a.y", "a.z", "a.x"]]
    assert cycles_of({"a.x": {"a.y"}, "a.y": set()}) == []
