"""The project documents its semantics in its own ``docs/``, and every reference into
the documentation resolves: no file cites a specification outside the repository,
every citation written as ``docs/<page>.md, "<heading>"`` names a page and a ``##``
heading of it that exist, and every relative link of the Markdown pages points at a
file (and, for a ``#fragment`` into a Markdown page, a heading) that exists."""

from __future__ import annotations

import re
import subprocess
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Mentions of the external specification the project no longer relies on, spelled in
#: parts so that this file does not contain them.
FOREIGN = ("SPEC" + " \u00a7", "SPEC" + ".md")
#: ``docs/<page>.md, "<heading>"``, optionally followed by ``and "<heading>"``.
CITATION = re.compile(r'docs/([\w.-]+\.md), ("[^"\n]+"(?: and "[^"\n]+")*)')
#: A citation cut after its page: the heading must be on the same line to be checked.
CUT_CITATION = re.compile(r"docs/[\w.-]+\.md,[ \t]*$", re.M)
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def repository_files() -> list[Path]:
    """The repository's files: tracked ones and new ones git does not ignore."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the repository's file list is unknown")
    names = sorted({name for name in listed.decode().split("\0") if name})
    return [ROOT / name for name in names if (ROOT / name).is_file()]


def text_of(path: Path) -> str | None:
    """The file's text, or None for a binary file."""
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def texts() -> dict[str, str]:
    """Every text file of the repository by its relative path."""
    found = {}
    for path in repository_files():
        text = text_of(path)
        if text is not None:
            found[path.relative_to(ROOT).as_posix()] = text
    return found


def headings(page: Path, level: str = "#{1,6}") -> list[str]:
    """The headings of a Markdown page (``level``: how many #), outside code blocks."""
    body = FENCE.sub("", page.read_text(encoding="utf-8"))
    return [m.group(1).strip() for m in re.finditer(rf"^{level} +(.+?) *#* *$", body, re.M)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"`|\*\*|__", "", heading).strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every anchor of a Markdown page's headings (repeats get -1, -2, ...)."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    for heading in headings(page):
        base = slug(heading)
        count = counts.get(base, 0)
        counts[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_no_file_cites_the_external_specification() -> None:
    offending = [f"{name}:{number}: {line.strip()}"
                 for name, text in texts().items()
                 for number, line in enumerate(text.splitlines(), 1)
                 if any(needle in line for needle in FOREIGN)]
    assert not offending, "cite docs/semantics.md instead:\n" + "\n".join(offending)


def test_every_citation_names_a_page_and_heading_that_exist() -> None:
    problems, cited = [], 0
    for name, text in texts().items():
        for match in CITATION.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            page = ROOT / "docs" / match.group(1)
            if not page.is_file():
                problems.append(f"{name}:{line}: no page docs/{match.group(1)}")
                continue
            present = set(headings(page, "##"))
            for heading in re.findall(r'"([^"\n]+)"', match.group(2)):
                cited += 1
                if heading not in present:
                    problems.append(f"{name}:{line}: docs/{match.group(1)} has no "
                                    f"'## {heading}'")
        for match in CUT_CITATION.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            problems.append(f"{name}:{line}: a citation's heading must be on its line")
    assert not problems, "\n".join(problems)
    assert cited, "no citation found: the pattern no longer matches how the code cites"


def markdown_pages() -> list[Path]:
    return [*sorted((ROOT / "docs").glob("*.md")), ROOT / "ARCHITECTURE.md", ROOT / "README.md"]


def test_every_relative_link_of_the_docs_resolves() -> None:
    problems, checked = [], 0
    for page in markdown_pages():
        body = CODE_SPAN.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
        for match in LINK.finditer(body):
            target = match.group(1)
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("/"):
                continue  # a URL (http:, mailto:) or a site-absolute path
            checked += 1
            path, _, fragment = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            if not file.exists():
                problems.append(f"{where}: no file {path}")
            elif fragment and file.suffix == ".md" and fragment not in anchors(file):
                problems.append(f"{where}: no heading with the anchor #{fragment}")
    assert not problems, "\n".join(problems)
    assert checked, "no relative link found"


def test_the_semantics_page_has_the_sections_the_code_cites() -> None:
    """The page exists and its ``##`` headings are unique, so a citation is unambiguous."""
    sections = headings(ROOT / "docs" / "semantics.md", "##")
    assert len(sections) == len(set(sections)), sections
    assert {"The conversion", "IF neuron", "Time-difference ops"} <= set(sections)
