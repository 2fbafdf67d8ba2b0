"""The docs stay a guide to the product as it is: a README short enough to read first, links that resolve, and
no account of how the project was developed."""
import re

import pytest

from conftest import ROOT

README_LIMIT = 15_000  # bytes: the teaching path; reference material lives in docs/
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE = [p for folder in ("lmc_ray", "benchmarks", "jobs") for p in sorted((ROOT / folder).rglob("*"))
        if p.suffix in (".py", ".sh", ".yaml")]
# Phrases that tell the project's own history (rounds of work, what an earlier version did) rather than what
# the product does. A user reads what runs now; a benchmark keeps its latest dated run.
HISTORY = [r"\bsessions?\b", r"\bthe issue\b", r"\bissue's\b", r"\bissue #?\d", r"\bformer name\b", r"\bformerly\b",
           r"\bold default\b", r"\bolder core\b", r"\bearlier (version|core|attempt|figures|run of)\b",
           r"\b(previous|earlier) demo population\b", r"\btried for\b", r"\bwhy (it was|they were) not kept\b",
           r"\bno GPU (was )?lent\b", r"\blent GPU\b", r"\brerun in\b", r"\bused to (be|give|take)\b",
           r"\buntil a GPU\b", r"\bin an earlier\b", r"\bwas used silently\b"]


def test_the_readme_is_a_short_teaching_path():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= README_LIMIT, f"README.md is {len(text.encode())} bytes; move reference to docs/"
    headings = re.findall(r"(?m)^## (.+)$", text)
    assert headings[:4] == ["Quick start", "Your first sweep", "Reading the store", "Basins and the report"]
    assert headings[-1] == "Where to go next"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
        if "://" not in target:
            assert (doc.parent / target).exists(), f"{doc.name}: link to {target!r}, which does not exist"


@pytest.mark.parametrize("path", DOCS + CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_line_tells_the_projects_history(path):
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}" for n, line in
             enumerate(path.read_text().splitlines(), 1) for pattern in HISTORY if re.search(pattern, line, re.I)]
    assert not found, "\n".join(found)


def test_the_history_scan_sees_such_lines():
    lines = ["an earlier version of this page reported", "(the issue that asked for this)", "no GPU lent",
             "the old default", "kept under its former name"]
    assert all(any(re.search(p, line, re.I) for p in HISTORY) for line in lines)
    assert not any(re.search(p, "resumes what a previous run left; an earlier export", re.I) for p in HISTORY)
