"""Sphinx configuration of the deeplearning_tutorial documentation (``make docs``).

The tutorial pages are MyST-NB notebooks (``file_format: mystnb`` in their
front matter): the build runs their cells, shows the outputs, and offers each
executed notebook for download (``_notebooks/<page>.ipynb``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

project = "deeplearning_tutorial"
author = "deeplearning_tutorial developers"
copyright = "2026, deeplearning_tutorial developers"

extensions = [
    "myst_nb",  # MyST markdown, and the tutorial pages executed as notebooks
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax served with the pages: the math renders offline too
    "sphinx.ext.viewcode",
]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
exclude_patterns = ["_build"]

# Notebooks: run when their source changed (a cache in _build/.jupyter_cache), in a
# temporary folder (the files a program writes stay out of the source tree); a cell
# that raises fails the build.
nb_execution_mode = "cache"
nb_execution_in_temp = True
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

html_theme = "furo"
html_title = "Deep Learning Tutorials on PyTensor"
html_static_path = ["_static"]
html_css_files = ["custom.css"]

numpydoc_show_class_members = False
numpydoc_xref_param_type = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"
nitpicky = False


NOTEBOOK_LINK = (
    '<p class="notebook-download">This page is a Jupyter notebook: '
    '<a href="{href}" download>download it ({name})</a> and run it top to bottom.</p>'
)


def merged_streams(outputs):
    """A cell's outputs with each stream's pieces (one per flushed line) as one output.

    MyST-NB's ``nb_merge_streams`` merges them for the page by appending the
    other pieces to the first one in place, and leaves them in the executed
    notebook too: where the first piece already ends with the others, they are
    dropped; otherwise they are appended here.
    """
    merged, pieces = [], {}
    for output in outputs:
        if output.output_type == "stream" and output.name in pieces:
            pieces[output.name].append(output)
            continue
        if output.output_type == "stream":
            pieces[output.name] = [output]
        merged.append(output)
    for first, *rest in pieces.values():
        appended = "".join(piece.text.rstrip() + "\n" for piece in rest if piece.text.rstrip())
        if not first.text.endswith(appended):
            first.text += "".join(piece.text for piece in rest)
    return merged


def add_notebook_download(app, pagename, templatename, context, doctree):
    """Copy a tutorial page's executed notebook into the site, linked under its title."""
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not executed.exists() or "body" not in context:
        return
    target = Path(app.outdir) / "_notebooks" / executed.name
    target.parent.mkdir(exist_ok=True)
    notebook = nbformat.read(executed, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = merged_streams(cell.outputs)
    nbformat.write(notebook, target)
    href = "../" * pagename.count("/") + "_notebooks/" + executed.name
    link = NOTEBOOK_LINK.format(href=href, name=executed.name)
    context["body"] = re.sub("</h1>", lambda m: m.group(0) + link, context["body"], count=1)


def setup(app):
    app.connect("html-page-context", add_notebook_download)
