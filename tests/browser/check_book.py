"""Headless-Chromium check of the built book (``make browser-check``; not collected by pytest).

Serves ``_build/html`` on a loopback port and opens every content page in Debian's ``chromium``
through ``chromedriver`` (selenium). For each page it asserts:

* MathJax (served locally, never from a CDN) typeset every math element: each ``.math`` node holds
  an ``mjx-container``, no ``mjx-merror`` (TeX error) exists, and no raw ``$$``, ``\\(``, ``\\[``
  or ``\\begin{`` is left in the prose (code blocks excluded);
* every ``<img>`` loaded (``naturalWidth > 0``);
* the browser console has no SEVERE entries, and nothing was fetched from another host;
* the browser found what there is to check: a page whose served HTML has math elements or images
  fails if the browser counted none of them (`content_problems`, unit-tested on saved HTML in
  tests/test_browser_check.py, which needs no browser).

It saves a full-page screenshot of the most math-heavy page to ``--screenshots``. Exit status 0
when every page passes, 1 otherwise, 2 on a usage error. Install the browser with
``apt-get install -y chromium chromium-driver``.
"""
from __future__ import annotations

import argparse
import functools
import http.server
from html.parser import HTMLParser
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

SKIP = {"genindex.html", "search.html", "index.html"}  # generated indices and the root redirect
CDN = re.compile(r"""<script[^>]+src=["']https?://[^"']*mathjax""", re.IGNORECASE)

_PAGE_JS = r"""
const done = arguments[arguments.length - 1];
const wait = (ms) => new Promise(r => setTimeout(r, ms));
(async () => {
  // MathJax loads asynchronously; wait for it on pages that have math.
  const mathNodes = Array.from(document.querySelectorAll('.math'));
  let mj = 'absent';
  if (mathNodes.length) {
    for (let i = 0; i < 600 && !(window.MathJax && MathJax.startup && MathJax.startup.promise); i++) await wait(50);
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; mj = 'ok'; }
    else mj = 'not loaded';
  }
  // Scroll every image into view (lazy loading), then wait for them.
  const imgs = Array.from(document.images);
  for (const img of imgs) { img.loading = 'eager'; img.scrollIntoView(); }
  for (let i = 0; i < 100 && imgs.some(im => !im.complete); i++) await wait(50);
  const untyped = mathNodes.filter(n => !n.querySelector('mjx-container')).map(n => n.textContent.slice(0, 60));
  // Prose text outside code: raw TeX delimiters there mean math was not recognised.
  const main = document.querySelector('main') || document.body;
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT, {acceptNode: (t) =>
    t.parentElement.closest('pre, code, script, style, mjx-container, .highlight, .cell_output')
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  const raw = [];
  for (let t = walker.nextNode(); t; t = walker.nextNode()) {
    const m = t.textContent.match(/\$\$|\\\(|\\\[|\\begin\{/);
    if (m) raw.push(t.textContent.trim().slice(0, 80));
  }
  const origin = location.origin;
  const external = performance.getEntriesByType('resource').map(e => e.name)
    .filter(u => !u.startsWith(origin) && !u.startsWith('data:'));
  done({
    title: document.title,
    math: mathNodes.length,
    mjx: document.querySelectorAll('mjx-container').length,
    merror: document.querySelectorAll('mjx-merror').length,
    mathjax: mj,
    untyped: untyped,
    raw: raw,
    images: imgs.length,
    broken: imgs.filter(im => !(im.complete && im.naturalWidth > 0)).map(im => im.getAttribute('src')),
    external: external,
    height: Math.max(document.body.scrollHeight, document.documentElement.scrollHeight),
  });
})();
"""


class _ContentCounter(HTMLParser):
    """Counts what the browser check looks at in served HTML: elements with class ``math`` (the
    ``.math`` nodes Sphinx writes for inline and display math) and ``<img>`` tags."""

    def __init__(self):
        super().__init__()
        self.math = self.images = 0

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        self.math += "math" in classes
        self.images += tag == "img"


def static_counts(html: str) -> dict[str, int]:
    """``{"math": n, "images": m}`` in the page's HTML as served, before any script runs."""
    counter = _ContentCounter()
    counter.feed(html)
    counter.close()
    return {"math": counter.math, "images": counter.images}


def content_problems(html: str, info: dict) -> list[str]:
    """A page passes only if the browser checked something: where the served HTML has math or
    images and the browser counted none, nothing was typeset-checked or load-checked."""
    expected = static_counts(html)
    problems = []
    for key, what in (("math", "math elements"), ("images", "images")):
        if expected[key] and not info[key]:
            problems.append(f"the browser counted 0 {what}, but the page's HTML has {expected[key]}: "
                            "nothing was checked (page not loaded or not rendered?)")
    return problems


def find_pages(root: Path) -> list[Path]:
    """Content pages of a built book: every .html outside _static/_sources/_images, minus indices."""
    pages = []
    for p in sorted(root.rglob("*.html")):
        rel = p.relative_to(root)
        if rel.parts[0].startswith(("_", ".")) or rel.name in SKIP or rel.name.startswith("prf-"):
            continue
        pages.append(p)
    return pages


def serve(root: Path) -> http.server.ThreadingHTTPServer:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep the report readable
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def make_driver(user_dir: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    # Flags from the machine notes: as root, no sandbox; no background traffic on a closed network.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000", f"--user-data-dir={user_dir}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(options=opts, service=service)


def check_page(driver, url: str, html: str) -> tuple[dict, list[str]]:
    driver.get(url)
    info = driver.execute_async_script(_PAGE_JS)
    problems = content_problems(html, info)
    if CDN.search(html):
        problems.append("MathJax <script> loads from a remote URL (expected _static/mathjax)")
    if info["math"]:
        if info["mathjax"] != "ok":
            problems.append(f"MathJax {info['mathjax']} on a page with {info['math']} math elements")
        if info["untyped"]:
            problems.append(f"{len(info['untyped'])} math elements not typeset, e.g. {info['untyped'][0]!r}")
    if info["merror"]:
        problems.append(f"{info['merror']} MathJax errors (mjx-merror)")
    if info["raw"]:
        problems.append(f"raw TeX left in prose: {info['raw'][:3]}")
    if info["broken"]:
        problems.append(f"images not loaded: {info['broken']}")
    if info["external"]:
        problems.append(f"fetched from other hosts: {info['external'][:5]}")
    severe = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    # The browser asks for /favicon.ico on its own; the book declares none. Not a page error.
    severe = [m for m in severe if "favicon.ico" not in m]
    if severe:
        problems.append(f"console SEVERE: {severe[:3]}")
    return info, problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html_dir", nargs="?", default="_build/html", type=Path)
    ap.add_argument("--screenshots", default="_build/screenshots", type=Path)
    args = ap.parse_args(argv)
    root = args.html_dir.resolve()
    pages = find_pages(root) if root.is_dir() else []
    if not pages:
        print(f"check_book: no pages under {root}; build the book first (make book).", file=sys.stderr)
        return 2
    if not (root / "_static" / "mathjax" / "tex-chtml.js").is_file():
        print("check_book: _static/mathjax/tex-chtml.js missing: offline MathJax was not installed.")
        return 1

    server = serve(root)
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    failures, best = 0, None
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="susc-chromium-") as user_dir:
        driver = make_driver(user_dir)
        try:
            for page in pages:
                rel = page.relative_to(root).as_posix()
                info, problems = check_page(driver, base + rel, page.read_text(encoding="utf-8"))
                status = "FAIL" if problems else "ok"
                print(f"{status:4}  {rel:40} math={info['math']:3} mjx={info['mjx']:3} images={info['images']}")
                for p in problems:
                    print(f"      - {p}")
                failures += bool(problems)
                if best is None or info["mjx"] > best[1]["mjx"]:
                    best = (rel, info)
            if best is not None:
                rel, info = best
                driver.get(base + rel)
                driver.execute_async_script(_PAGE_JS)
                driver.set_window_size(1280, min(int(info["height"]) + 100, 12000))
                driver.execute_script("window.scrollTo(0, 0)")
                args.screenshots.mkdir(parents=True, exist_ok=True)
                shot = args.screenshots / (Path(rel).with_suffix("").as_posix().replace("/", "_") + ".png")
                driver.save_screenshot(str(shot))
                print(f"screenshot of the most math-heavy page ({info['mjx']} formulas): {shot}")
        finally:
            driver.quit()
            server.shutdown()
    print(f"check_book: {len(pages) - failures}/{len(pages)} pages passed in {time.perf_counter() - t0:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
