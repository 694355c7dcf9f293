"""Check the built documentation's internal links and images: ``python scripts/check_links.py [SITE]``.

Reads every ``.html`` page under ``SITE`` (``docs/_build/html`` by default) and
checks that each link (``<a href>``), image (``<img src>``), stylesheet and
script that points inside the site names a file that exists there, and that a
``#fragment`` names an ``id`` of the page it points to.  External links
(``http:``, ``https:``, ``mailto:``, ...) are not fetched.  Prints one line per
broken reference, ``page: reference (why)``, and exits with status 1 when there
is one.
"""

from __future__ import annotations

import argparse
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

SITE = Path(__file__).resolve().parent.parent / "docs" / "_build" / "html"

# the attribute of each tag that points to another file
REFERENCES = {"a": "href", "img": "src", "link": "href", "script": "src", "source": "src"}


class PageParser(HTMLParser):
    """Collects a page's ids and the references it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.references: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name in ("id", "name"):
            if attributes.get(name):
                self.ids.add(attributes[name])
        reference = attributes.get(REFERENCES.get(tag, ""))
        if reference:
            self.references.append(reference)


def parse(page: Path) -> PageParser:
    parser = PageParser()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def broken_references(site: Path) -> list[str]:
    """Every internal reference of the site's pages that does not resolve, as ``page: reference (why)``."""
    site = site.resolve()
    pages = {page: parse(page) for page in sorted(site.rglob("*.html"))}
    problems = []
    for page, parsed in pages.items():
        for reference in parsed.references:
            parts = urlsplit(reference)
            if parts.scheme or parts.netloc:
                continue  # external, or data: / mailto: / javascript:
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            name = f"{page.relative_to(site)}: {reference}"
            if not target.is_relative_to(site):
                problems.append(f"{name} (outside the site)")
            elif target.is_dir():
                if not (target / "index.html").exists():
                    problems.append(f"{name} (a folder without index.html)")
            elif not target.exists():
                problems.append(f"{name} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{name} (no id {parts.fragment!r} in {target.name})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", nargs="?", type=Path, default=SITE, help="the built HTML site (default: %(default)s)")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").exists():
        print(f"check_links: no index.html in {args.site}; build the site first (make docs)", file=sys.stderr)
        return 2
    problems = broken_references(args.site)
    for problem in problems:
        print(problem)
    n_pages = sum(1 for _ in args.site.rglob("*.html"))
    print(f"{len(problems)} broken internal reference(s) in {n_pages} pages", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
