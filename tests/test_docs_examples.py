"""Every ```python example in the documentation pages runs (one namespace per page, in order)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
PAGES = sorted(page for page in DOCS.glob("*.md") if EXAMPLE.search(page.read_text()))


def test_the_pages_have_examples():
    assert PAGES, f"no ```python examples found under {DOCS}"


@pytest.mark.parametrize("page", PAGES, ids=[page.stem for page in PAGES])
def test_page_examples_run(page):
    namespace: dict = {"__name__": f"docs.{page.stem}"}
    for number, example in enumerate(EXAMPLE.findall(page.read_text()), start=1):
        exec(compile(example, f"{page.name}, example {number}", "exec"), namespace)
