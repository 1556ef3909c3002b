"""The browser check's page logic without a browser: a page whose HTML has math or images must fail
when the browser counted none of them (it checked nothing), as happened on chapter 10."""
from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "check_book", Path(__file__).parent / "browser" / "check_book.py")
check_book = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_book)

# Shaped like a Sphinx/MyST-NB page: inline and display math, one figure from a cell output.
PAGE = """<html><body><main>
<p>The susceptibility <span class="math notranslate nohighlight">\\(\\chi\\)</span> is</p>
<div class="math notranslate nohighlight">\\[ \\chi = -\\mathrm{Cov}[\\phi, \\Delta L] \\]</div>
<div class="cell_output"><img alt="_images/fig.png" src="_images/fig.png" /></div>
<pre><code>mathematics = "not a math element"</code></pre>
</main></body></html>"""


def test_static_counts_sees_math_and_images():
    assert check_book.static_counts(PAGE) == {"math": 2, "images": 1}
    assert check_book.static_counts("<html><body><p>text</p></body></html>") == {"math": 0, "images": 0}


def test_page_with_content_fails_when_the_browser_counted_nothing():
    nothing = {"math": 0, "images": 0}
    problems = check_book.content_problems(PAGE, nothing)
    assert len(problems) == 2 and "math" in problems[0] and "images" in problems[1]
    # what ch10 showed: math=0, images=0 on a page that has both
    assert check_book.content_problems(PAGE, {"math": 0, "images": 1})
    assert check_book.content_problems(PAGE, {"math": 2, "images": 0})


def test_page_passes_when_the_browser_saw_its_content_or_there_is_none():
    assert check_book.content_problems(PAGE, {"math": 2, "images": 1}) == []
    assert check_book.content_problems("<p>plain text</p>", {"math": 0, "images": 0}) == []
