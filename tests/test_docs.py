"""The documentation site: it builds strictly, its generated parts are fresh, its links resolve."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_site_builds_in_strict_mode(tmp_path):
    """`mkdocs build --strict`, as CI runs it: any warning (a broken link or anchor, a docstring
    griffe cannot parse, a page missing from the nav, a public name without an API page) fails."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    site = tmp_path / "site"
    assert (site / "api" / "state" / "index.html").is_file()
    html = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert 'href="step/#trainkit.step.train_step"' in html  # the generated index of the public API


def test_the_migration_table_is_up_to_date():
    """docs/migrating.md's table equals `python docs/gen_migration_table.py`'s output for the
    installed transformers; rerun the script after changing trainkit/args.py or transformers."""
    gen = _load("gen_migration_table")
    page = gen.PAGE.read_text(encoding="utf-8")
    assert gen.render(page) == page, "docs/migrating.md is stale: run `python docs/gen_migration_table.py`"


def test_the_migration_notes_name_real_fields():
    import transformers

    import trainkit.args

    gen = _load("gen_migration_table")
    ours = {f.name for f in attrs.fields(trainkit.args.TrainingArguments)}
    theirs = {f.name for f in dataclasses.fields(transformers.TrainingArguments)}
    assert set(gen.DIFFERENT) <= ours & theirs, set(gen.DIFFERENT) - (ours & theirs)
    assert set(gen.REASONS) <= theirs - ours, set(gen.REASONS) - (theirs - ours)
    assert set(gen.TRAINKIT_ONLY) == ours - theirs
    # Every row of the table is one field, and every field has a row.
    rows = re.findall(r"^\| `(\w+)` \|", gen.table(), re.M)
    assert sorted(rows) == sorted(ours | theirs)


_LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            out.append(line)
    return "\n".join(out)


def test_every_relative_link_in_the_docs_points_to_an_existing_file():
    """Links between pages, to images and to the repository's files (``../examples/x.py``), and the
    files pages include (``<!-- include: ... -->``, ``--8<-- "..."``), relative to the page."""
    broken = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in _LINK.findall(_prose(text)):
            if re.match(r"^([a-z][a-z0-9+.-]*:|#|/)", target, re.I):
                continue  # a URL, an anchor on the same page, or an absolute path
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
        for included in re.findall(r"<!-- include: (\S+) -->|--8<-- \"([^\"]+)\"", text):
            name = included[0] or included[1]
            if not (ROOT / name).exists():
                broken.append(f"{page.relative_to(ROOT)}: includes {name}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_schedule_has_its_figure():
    """docs/img/schedule-<name>.png for every schedule name; `python docs/gen_figures.py` draws them."""
    import trainkit

    missing = [n for n in trainkit.SCHEDULE_NAMES if not (DOCS / "img" / f"schedule-{n}.png").is_file()]
    assert not missing, f"run `python docs/gen_figures.py`: no figure for {missing}"
    assert all((DOCS / "img" / f"schedule-{n}.png").stat().st_size < 100_000 for n in trainkit.SCHEDULE_NAMES)


def test_the_error_page_lists_every_catalogued_case_and_error_class():
    """docs/errors.md names every case of tests/test_error_catalogue.py (by its id) and every error class."""
    import trainkit.errors
    from tests.test_error_catalogue import ALL

    page = (DOCS / "errors.md").read_text()
    missing = [case[0] for case in ALL if f"`{case[0]}`" not in page]
    assert not missing, f"docs/errors.md does not list the cases {missing}"
    classes = [n for n in trainkit.errors.__all__ if n.endswith("Error")]
    assert not [n for n in classes if f"`{n}`" not in page]
