"""The README and the pages under docs/: every relative link and image points at a file or folder that exists, every
`#anchor` names a heading of its target, and the README links every page."""

import re
from pathlib import Path
from urllib.parse import unquote

from testing_utils import REPO_ROOT


FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
# A code span may run over lines of one paragraph, never over a blank line.
CODE_SPAN = re.compile(r"(`+)(?:(?!\1)(?!\n[ \t]*\n).)+?\1", re.DOTALL)
# [text](target) and ![alt](target), with an optional "title"; the text may hold one level of brackets.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text (links reduced to their text), lower-cased, punctuation other than
    hyphens and spaces dropped, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def _prose_lines(text: str):
    """(line number, line) for every line outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.splitlines(), start=1):
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)
            continue
        if fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = None
            continue
        yield number, line


def anchors(text: str) -> set[str]:
    """The anchors of a markdown text's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    found, seen = set(), {}
    for _, line in _prose_lines(text):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(text: str):
    """(line number, target) of every markdown link and image outside code; a link's text may run over lines."""
    prose = [""] * len(text.splitlines())
    for number, line in _prose_lines(text):
        prose[number - 1] = line
    # Code spans may run over lines too; blanking them keeps every newline, so offsets still give line numbers.
    joined = CODE_SPAN.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), "\n".join(prose))
    for match in LINK.finditer(joined):
        yield joined.count("\n", 0, match.start()) + 1, match.group(1)


def _pages(root: Path) -> list[Path]:
    return [root / "README.md"] + sorted((root / "docs").glob("*.md"))


def broken_links(root: Path) -> list[str]:
    """Every problem with the links of `root`'s README.md and docs/*.md, one line each: file, line, target, what is
    wrong. Empty when all is well."""
    root = root.resolve()
    problems, texts, linked_from_readme = [], {}, set()

    def text_of(path: Path) -> str:
        if path not in texts:
            texts[path] = path.read_text(encoding="utf-8")
        return texts[path]

    for page in _pages(root):
        name = page.relative_to(root).as_posix()
        for number, target in links(text_of(page)):
            where = f"{name}:{number}: ({target})"
            if not target:
                problems.append(f"{where} empty link target")
                continue
            if SCHEME.match(target) or target.startswith("//"):
                continue  # http(s), mailto: not checked here
            path_part, _, anchor = target.partition("#")
            path_part = unquote(path_part)
            if not path_part:
                resolved = page
            elif path_part.startswith("/"):
                resolved = (root / path_part.lstrip("/")).resolve()
            else:
                resolved = (page.parent / path_part).resolve()
            if not resolved.is_relative_to(root):
                problems.append(f"{where} points outside the repository")
                continue
            if not resolved.exists():
                problems.append(f"{where} no such file or folder: {resolved.relative_to(root).as_posix()}")
                continue
            if page.name == "README.md" and page.parent == root:
                linked_from_readme.add(resolved)
            if anchor and resolved.suffix == ".md" and resolved.is_file():
                if anchor not in anchors(text_of(resolved)):
                    problems.append(f"{where} no heading with the anchor #{anchor} in "
                                    f"{resolved.relative_to(root).as_posix()}")
    for page in _pages(root)[1:]:
        if page.resolve() not in linked_from_readme:
            problems.append(f"README.md: does not link {page.relative_to(root).as_posix()}")
    return problems


def test_readme_and_docs_links_resolve():
    problems = broken_links(REPO_ROOT)
    assert not problems, "broken links in the documentation:\n" + "\n".join(problems)


def test_the_check_reports_every_kind_of_broken_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "ddp.yaml").write_text("x: 1\n")
    (tmp_path / "README.md").write_text(
        "# Title\n"
        "\n"
        "## Set-up: two commands\n"
        "## Notes\n"
        "## Notes\n"
        "[fine](docs/fine.md#the-page-ring) [folder](configs) ![picture](docs/missing.png)\n"
        "[here](#set-up-two-commands) [second notes](#notes-1) [third notes](#notes-2)\n"
        "`[in code](nowhere.md)` and [web](https://example.com/none) [mail](mailto:a@b.c)\n"
        "```\n"
        "[in a fence](nowhere.md)\n"
        "```\n"
        "[out](../elsewhere.md) [anchor](docs/fine.md#no-such-heading) [a link over\n"
        "two lines](docs/nowhere.md)\n",
        encoding="utf-8")
    (tmp_path / "docs" / "fine.md").write_text(
        "# The page: `ring`\n\n[back](../README.md#title) [wrong](../README.md#setup) "
        "[config](../configs/ddp.yaml#L1)\n", encoding="utf-8")
    (tmp_path / "docs" / "orphan.md").write_text("# Orphan\n\n[gone](gone.md)\n", encoding="utf-8")

    assert broken_links(tmp_path) == [
        "README.md:6: (docs/missing.png) no such file or folder: docs/missing.png",
        "README.md:7: (#notes-2) no heading with the anchor #notes-2 in README.md",
        "README.md:12: (../elsewhere.md) points outside the repository",
        "README.md:12: (docs/fine.md#no-such-heading) no heading with the anchor #no-such-heading in docs/fine.md",
        "README.md:12: (docs/nowhere.md) no such file or folder: docs/nowhere.md",
        "docs/fine.md:3: (../README.md#setup) no heading with the anchor #setup in README.md",
        "docs/orphan.md:3: (gone.md) no such file or folder: docs/gone.md",
        "README.md: does not link docs/orphan.md",
    ]


def test_github_slugs():
    assert github_slug("Reasoning quality (`--task reasoning`)") == "reasoning-quality---task-reasoning"
    assert github_slug("The demo (`app.py`)") == "the-demo-apppy"
    assert github_slug("transformers' own InstructBLIP tests") == "transformers-own-instructblip-tests"
    assert github_slug("The `datasets` builder and publishing") == "the-datasets-builder-and-publishing"
    assert github_slug("Data: from EmoSet to [links](x.md)") == "data-from-emoset-to-links"
    assert anchors("# A\n## A\n```\n# A\n```\n### A\n") == {"a", "a-1", "a-2"}
