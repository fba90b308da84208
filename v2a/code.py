"""A stage's code identity: the project files its module imports, transitively, and their content.

Imports are read from the source (``ast``), not executed: ``import a.b``, ``from a import b`` (``b`` a submodule or a
name), relative imports, and imports inside functions all count; imports under ``if TYPE_CHECKING:`` do not (they
only serve type checkers). A file is a project file when its top-level package (or module) lies in one of the
search roots: the repository (only the project's own packages, ``PACKAGES``: installed from a wheel, that folder is
site-packages), and the folder of the stage's own top-level package. Third-party packages never count, so a stage's
identity is the same in a checkout and in an install of the same code.
``root`` (module_files, code_identity) reads the project from another folder instead (a copy of the repository:
tests/test_stage_identity.py), without importing anything from it.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import lru_cache
from pathlib import Path

from v2a.io import sha256_bytes

REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout, or site-packages when installed
PACKAGES = frozenset({"v2a", "frozen", "pipeline", "trainer", "infer", "scoring", "lab"})  # pyproject.toml's packages


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(source: str, module: str, is_package: bool) -> set[str]:
    """Dotted names a module's source imports (``from a import b`` gives ``a`` and ``a.b``), TYPE_CHECKING left out."""
    return set(_imported_names(source, module, is_package))


@lru_cache(maxsize=None)
def _imported_names(source: str, module: str, is_package: bool) -> frozenset[str]:
    """:func:`imported_names`, parsed once per source text: the stages share most files (``v2a status`` reads the
    nine stages' files, 74 distinct ones, in one process)."""
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for sub in node.orelse:
                visit(sub)
            return
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join(p for p in (*parts, base) if p)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return frozenset(n for n in names if n)


Roots = tuple[tuple[Path, frozenset | None], ...]  # (folder, the top-level names that count there; None: all)


def _locate(name: str, roots: Roots) -> tuple[Path, Path, bool] | None:
    """(file, root, is_package) of a project module, or None for a third-party module or a plain name."""
    parts = name.split(".")
    for root, only in roots:
        if only is not None and parts[0] not in only:
            continue
        base = root.joinpath(*parts)
        if (base / "__init__.py").is_file():
            return base / "__init__.py", root, True
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py"), root, False
    return None


def _roots(module: str) -> Roots:
    spec = importlib.util.find_spec(module.split(".")[0])
    if spec is None or not spec.origin:
        raise ModuleNotFoundError(f"cannot find the stage module {module!r}")
    top = Path(spec.origin).resolve()
    top = top.parent.parent if top.name == "__init__.py" else top.parent
    roots = {REPO_ROOT: PACKAGES}
    roots.setdefault(top, None)  # a stage outside the project's packages (tests/toy_stages.py): its whole folder
    return tuple(roots.items())


def module_files(module: str, root: Path | None = None) -> dict[str, Path]:
    """Every project file ``module`` imports, transitively (the module itself and its packages' ``__init__``s
    included), keyed by its path relative to its search root (``root``: the only one)."""
    roots = ((Path(root).resolve(), None),) if root is not None else _roots(module)
    if _locate(module, roots) is None:
        raise ModuleNotFoundError(f"stage module {module!r} is not a project file under "
                                  f"{', '.join(str(r) for r, _ in roots)}")
    found: dict[str, Path] = {}
    todo = [module]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        hit = _locate(name, roots)
        if hit is None:
            continue
        path, root, is_package = hit
        found[path.relative_to(root).as_posix()] = path
        parents = name.split(".")[:-1]
        todo.extend(".".join(parents[: i + 1]) for i in range(len(parents)))  # packages run their __init__
        todo.extend(imported_names(path.read_text(encoding="utf-8"), name, is_package))
    return dict(sorted(found.items()))


@lru_cache(maxsize=None)
def _file_hash(path: Path, mtime_ns: int, size: int) -> str:
    return sha256_bytes(path.read_bytes())[:16]


def code_identity(module: str, root: Path | None = None) -> dict[str, str]:
    """``{relative path: content hash}`` of every project file the stage module imports (read under ``root``)."""
    out = {}
    for rel, path in module_files(module, root).items():
        st = path.stat()
        out[rel] = _file_hash(path, st.st_mtime_ns, st.st_size)
    return out
