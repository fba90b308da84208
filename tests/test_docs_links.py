"""Every reference a reader can follow resolves inside the repository.

- README.md and docs/*.md: each relative link ``[text](path#anchor)`` names a file that exists (and, with an anchor,
  a heading of that file); each repository path cited in backticks (``frozen/cavp.py``, ``configs/demo.yaml``)
  exists.
- Code (every tracked .py, .toml, .yaml, .cfg file and the Makefile): a cited ``docs/NAME.md`` exists, and a cited
  ``docs/models.md section N`` is a numbered section there; no file cites a path outside the repository (the
  ``shared/`` folder of the machine it was written on, a ``MODELS.md`` that is not here).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("v2a", "frozen", "pipeline", "trainer", "infer", "scoring", "lab", "benchmarks", "tests", "configs",
            "docs", ".ci")
TOP_FILES = ("README.md", "Makefile", "stages.yaml", "pyproject.toml")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CITED = re.compile(r"`((?:%s)/[\w./-]*\w)`" % "|".join(re.escape(p) for p in PACKAGES))
DOC_CITE = re.compile(r"docs/([\w.-]+\.md)(?:,? section (\d+))?")


def docs() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def code_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
        names = out.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): every file on disk
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*") if ".venv" not in p.parts and p.is_file()]
    keep = (".py", ".toml", ".yaml", ".yml", ".cfg")
    return [REPO / n for n in names if n.endswith(keep) or n == "Makefile"]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but ``-`` and ``_``), spaces -> ``-``."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def _outside_code_blocks(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


@pytest.mark.parametrize("doc", docs(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc):
    broken = []
    for target in LINK.findall(_outside_code_blocks(doc.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        name, _, anchor = target.partition("#")
        dest = (doc.parent / name).resolve() if name else doc
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
        elif REPO not in dest.parents and dest != REPO:
            broken.append(f"{target}: outside the repository")
    assert broken == []


@pytest.mark.parametrize("doc", docs(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_cited_repository_path_exists(doc):
    text = doc.read_text(encoding="utf-8")
    cited = {c.rstrip("/") for c in CITED.findall(text)} | {c for c in TOP_FILES if f"`{c}`" in text}
    missing = sorted(c for c in cited if not any(REPO.glob(c)))  # globs allowed: `tests/data/*.tsv`
    assert missing == []


def test_code_cites_only_files_in_the_repository():
    models = (REPO / "docs" / "models.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\d+)\. ", models, flags=re.M))
    problems = []
    for path in code_files():
        if path == Path(__file__).resolve():
            continue
        rel = path.relative_to(REPO)
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if re.search(r"shared/reference|MODELS\.md|/work/shared", line):
                problems.append(f"{rel}:{n}: cites a file outside the repository: {line.strip()}")
            for name, section in DOC_CITE.findall(line):
                if not (REPO / "docs" / name).exists():
                    problems.append(f"{rel}:{n}: docs/{name} does not exist")
                elif name == "models.md" and section and section not in sections:
                    problems.append(f"{rel}:{n}: docs/models.md has no section {section}")
    assert problems == []


def test_slug_follows_github():
    assert slug("Reproduce Table 1 on a GPU") == "reproduce-table-1-on-a-gpu"
    assert slug("3. TimeChat visual path") == "3-timechat-visual-path"
    assert slug("`v2a generate`: sound for *your* videos") == "v2a-generate-sound-for-your-videos"
