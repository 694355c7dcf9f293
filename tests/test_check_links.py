"""scripts/check_links.py: the docs' internal links, images and fragments, on a small site made here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def check_links():
    spec = importlib.util.spec_from_file_location("check_links", REPO / "scripts" / "check_links.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_site(root: Path, pages: dict[str, str]) -> Path:
    for name, body in pages.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<html><body>{body}</body></html>", encoding="utf-8")
    return root


def test_a_site_whose_references_all_resolve_passes(check_links, tmp_path, capsys):
    site = write_site(tmp_path, {
        "index.html": '<a href="page.html#model">x</a> <a href="sub/">y</a> <img src="_static/f%20g.png">'
                      '<a href="https://example.org/missing">ext</a> <a href="#top">z</a> <p id="top"></p>',
        "page.html": '<section id="model"><a href="index.html">back</a></section>',
        "sub/index.html": '<link href="../_static/f%20g.png"><a href="../page.html">p</a>',
        "_static/f g.png": "",
    })
    assert check_links.broken_references(site) == []
    assert check_links.main([str(site)]) == 0
    assert "0 broken internal reference(s) in 3 pages" in capsys.readouterr().err


def test_each_kind_of_broken_reference_is_reported(check_links, tmp_path, capsys):
    site = write_site(tmp_path / "site", {
        "index.html": '<a href="missing.html">a</a> <img src="_static/none.png"> <a href="page.html#nowhere">b</a>'
                      '<a href="#also-nowhere">c</a> <a href="folder/">d</a> <a href="../outside.html">e</a>',
        "page.html": '<p id="here"></p>',
        "folder/other.html": "",
    })
    (tmp_path / "outside.html").write_text("")
    assert check_links.broken_references(site) == [
        "index.html: missing.html (no such file)",
        "index.html: _static/none.png (no such file)",
        "index.html: page.html#nowhere (no id 'nowhere' in page.html)",
        "index.html: #also-nowhere (no id 'also-nowhere' in index.html)",
        "index.html: folder/ (a folder without index.html)",
        "index.html: ../outside.html (outside the site)",
    ]
    assert check_links.main([str(site)]) == 1
    assert capsys.readouterr().out.count("\n") == 6


def test_a_site_not_built_yet_is_a_one_line_error(check_links, tmp_path, capsys):
    assert check_links.main([str(tmp_path)]) == 2
    assert "build the site first" in capsys.readouterr().err
