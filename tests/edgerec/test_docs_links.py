"""Every link into a section of the docs lands on a heading that exists (GitHub's anchors), and every alert's
runbook annotation in infra/prometheus points at a section of docs/operations.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = [
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "README.md",
    REPO / "SECURITY.md",
    REPO / "infra/terraform/README.md",
]
LINK = re.compile(r"\]\(([^)\s]*?\.md)?#([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (not `-` or `_`), each space a `-`."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (a repeated one gets -1, -2, ...), fenced code left out."""
    seen: dict[str, int] = {}
    found, fenced = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        heading = None if fenced else re.match(r"^#{1,6} (.+)$", line)
        if heading:
            name = slug(heading.group(1))
            found.add(f"{name}-{seen[name]}" if name in seen else name)
            seen[name] = seen.get(name, 0) + 1
    return found


def broken_links(path: Path) -> list[str]:
    broken = []
    for match in LINK.finditer(path.read_text()):
        target = (path.parent / match.group(1)).resolve() if match.group(1) else path
        if not target.exists() or match.group(2) not in anchors(target):
            broken.append(match.group(0))
    return broken


def test_the_anchors_are_githubs():
    assert slug("Availability (`python -m benchmarks.availability --out DIR [--rate 60]`)") == (
        "availability-python--m-benchmarksavailability---out-dir---rate-60"
    )
    assert slug("Edge: `edgerec edge serve`") == "edge-edgerec-edge-serve"


def test_a_link_to_a_missing_section_is_found(tmp_path):
    doc = tmp_path / "a.md"
    doc.write_text("# Top\n\n## Graceful stop\n\n[ok](#graceful-stop) [gone](#graceful-start) [x](b.md#top)\n")
    assert broken_links(doc) == ["](#graceful-start)", "](b.md#top)"]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_to_a_section_lands_on_a_heading(path):
    assert broken_links(path) == []


def test_every_alerts_runbook_points_at_a_section_of_operations_md():
    sections = anchors(REPO / "docs" / "operations.md")
    alerts = [
        rule
        for rules in sorted((REPO / "infra" / "prometheus" / "rules").glob("*.yml"))
        for group in yaml.safe_load(rules.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert len(alerts) > 10
    for rule in alerts:
        runbook = rule["annotations"].get("runbook") or rule["annotations"].get("runbook_url")
        assert runbook, f"{rule['alert']} has no runbook"
        page, _, anchor = runbook.partition("#")
        assert page.endswith("docs/operations.md") and anchor in sections, (rule["alert"], runbook)
