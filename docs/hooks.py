"""MkDocs hooks for trainkit's site (configured in ``mkdocs.yml``; not a page).

The pages are plain Markdown that also reads well on GitHub, so they link to files outside
``docs/`` (``../examples/functional_loop.py``) with ordinary relative links. MkDocs cannot
resolve those, so this hook:

* expands ``<!-- include: PATH -->`` (PATH relative to the repository root) with that file's
  Markdown, headings demoted one level, its relative links re-based on the including page;
* turns every link that leaves ``docs/`` into a link to the repository (``repo_url``, when
  ``mkdocs.yml`` sets one), or else into its plain text;
* expands ``<!-- public-api-index -->`` into a table of ``trainkit.__all__``, each name linked to
  its module's page in ``docs/api/`` (a name whose module has no page fails the build);
* drops the Sphinx roles (``:func:``, ``:class:``, ...) docstrings use before a code span.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_INCLUDE = re.compile(r"^<!-- include: (\S+) -->$", re.M)
_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]*)\]\((?P<target>[^)\s]+)\)")
_ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|exc|obj|ref):(?=<code|<a )")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _outside_prose(text: str, fn) -> str:
    """Apply ``fn`` to the text outside fenced code blocks."""
    out, chunk, fenced = [], [], False
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line):
            if not fenced:
                out.append(fn("".join(chunk)))
                chunk = []
            out.append(line)
            fenced = not fenced
        elif fenced:
            out.append(line)
        else:
            chunk.append(line)
    out.append(fn("".join(chunk)))
    return "".join(out)


def _is_relative(target: str) -> bool:
    return not re.match(r"^([a-z][a-z0-9+.-]*:|/|#)", target, re.I)


def _include(match: re.Match, page_dir: str) -> str:
    rel = match.group(1)
    text = (ROOT / rel).read_text(encoding="utf-8")
    src_dir = posixpath.dirname(rel)

    def rebase(m: re.Match) -> str:
        target = m.group("target")
        if not _is_relative(target):
            return m.group(0)
        path, sep, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(src_dir, path)) if path else rel
        return f"[{m.group('text')}]({posixpath.relpath(repo_path, page_dir)}{sep}{anchor})"

    def demote(prose: str) -> str:
        prose = re.sub(r"^(#{1,5}) ", r"#\1 ", prose, flags=re.M)
        return _LINK.sub(rebase, prose)

    return _outside_prose(text, demote)


def on_page_markdown(markdown: str, page, config, files) -> str:
    page_dir = posixpath.dirname("docs/" + page.file.src_uri)
    markdown = _expand_api_index(_INCLUDE.sub(lambda m: _include(m, page_dir), markdown))
    repo_url = (config.get("repo_url") or "").rstrip("/")

    def leave_docs(m: re.Match) -> str:
        target = m.group("target")
        if not _is_relative(target):
            return m.group(0)
        path, _, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(page_dir, path)) if path else ""
        if not path:
            return m.group(0)
        if repo_path.startswith("docs/"):  # a page or an image, unless excluded (the scripts)
            found = files.get_file_from_path(repo_path.removeprefix("docs/"))
            if found is not None and not found.inclusion.is_excluded():
                return m.group(0)
        if repo_url:
            return f"[{m.group('text')}]({repo_url}/blob/main/{repo_path}{'#' + anchor if anchor else ''})"
        return m.group("text")

    return _outside_prose(markdown, lambda prose: _LINK.sub(leave_docs, prose))


def on_page_content(html: str, page, config, files) -> str:
    return _ROLE.sub("", html)


# --- the API index: every name of trainkit.__all__, generated at build time --------------------

_API_INDEX = "<!-- public-api-index -->"


def api_index(api_dir: Path = ROOT / "docs" / "api") -> str:
    """A Markdown table of ``trainkit.__all__``: each name linked to its module's API page.

    Raises:
        ValueError: a public name whose module has no page in ``docs/api/``.
    """
    import importlib
    import inspect

    import trainkit

    pages = sorted(p.stem for p in api_dir.glob("*.md") if p.stem != "index")
    modules = {page: importlib.import_module(f"trainkit.{page}") for page in pages}
    rows, missing = [], []
    for name in sorted(trainkit.__all__, key=str.lower):
        obj = getattr(trainkit, name)
        home = getattr(obj, "__module__", "") if inspect.isclass(obj) or inspect.isfunction(obj) else ""
        page = home.removeprefix("trainkit.") if home.removeprefix("trainkit.") in modules else next(
            (p for p, m in modules.items() if name in getattr(m, "__all__", ())), None)
        if page is None:
            missing.append(name)
            continue
        doc = inspect.getdoc(obj) if inspect.isclass(obj) or inspect.isfunction(obj) else None
        summary = (doc or "").split("\n\n")[0].replace("\n", " ").replace("|", "&#124;")
        rows.append(f"| [`{name}`]({page}.md#trainkit.{page}.{name}) | `trainkit.{page}` | {summary} |")
    if missing:
        raise ValueError(f"public names without an API page in docs/api/: {', '.join(missing)}")
    return "\n".join(["| name | module | summary |", "|---|---|---|", *rows])


def _expand_api_index(markdown: str) -> str:
    return markdown.replace(_API_INDEX, api_index()) if _API_INDEX in markdown else markdown
