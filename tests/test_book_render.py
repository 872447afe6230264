"""The built book as a reader sees it, offline: headless Chromium renders each page without network.

Fails if a page still shows raw TeX (MathJax did not run, e.g. because it would need a CDN) or
if a figure's image file is missing. Needs Chromium (`apt-get install chromium`; `.ci/run`
installs it) and a built book (`make book`; `make test` builds it first).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "book" / "_build" / "html"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=15000"]
PAGES = sorted(HTML.glob("notebooks/*.html")) + [HTML / "intro.html", HTML / "notation.html"]
HIDDEN = re.compile(r"<(script|style|pre)\b.*?</\1>", re.S | re.I)  # code and scripts may hold TeX legitimately

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium): "
                                                  "the rendered-page check is skipped"),
    pytest.mark.skipif(not (HTML / "intro.html").is_file(), reason="the book is not built (make book)"),
]


def _rendered_dom(page: Path) -> str:
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "<body" in out.stdout, f"{page.name}: Chromium failed: {out.stderr[-500:]}"
    return out.stdout


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_page_renders_math_and_figures_without_network(page: Path) -> None:
    source = page.read_text()
    dom = _rendered_dom(page)
    visible = HIDDEN.sub("", dom)
    for raw in ("\\(", "\\[", "$$"):
        assert raw not in visible, f"{page.name}: raw TeX '{raw}' is visible: MathJax did not typeset the page"
    if "math notranslate" in source:  # the page has formulas: MathJax must have rendered them
        assert "<mjx-container" in dom, f"{page.name}: formulas present but none typeset"
    for src in re.findall(r'<img[^>]+src="([^"]+)"', source):
        if not src.startswith(("data:", "http")):
            assert (page.parent / src).is_file(), f"{page.name}: figure {src} is missing"


# Runs in the page once MathJax has typeset it: every element of the page's article that scrolls
# sideways (overflow-x auto or scroll, content wider than its box), and whether the page itself does.
OVERFLOW_JS = """
<script>
window.addEventListener('load', function () {
  var ready = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
  ready.then(function () { setTimeout(function () {
    var wide = [];
    document.querySelectorAll('article *').forEach(function (el) {
      var ox = getComputedStyle(el).overflowX;
      if ((ox === 'auto' || ox === 'scroll') && el.scrollWidth > el.clientWidth + 1) {
        var text = (el.innerText || el.textContent || '').trim().split('\\n')[0].slice(0, 60);
        wide.push(el.tagName.toLowerCase() + '.' + (el.className || '').toString().split(' ')[0] +
                  ' (' + el.scrollWidth + ' px in ' + el.clientWidth + '): ' + text);
      }
    });
    if (document.documentElement.scrollWidth > window.innerWidth + 1)
      wide.push('the page (' + document.documentElement.scrollWidth + ' px in ' + window.innerWidth + ')');
    document.body.setAttribute('data-overflow', JSON.stringify(wide));
  }, 500); });
});
</script>
"""


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_nothing_scrolls_sideways_at_1280px(page: Path) -> None:
    """No code cell, output, table or equation is cut behind a horizontal scrollbar in a 1280 px window."""
    probe = page.with_name(f"_overflow_probe_{page.name}")  # beside the page, so its relative assets load
    probe.write_text(page.read_text().replace("</body>", OVERFLOW_JS + "</body>", 1))
    try:
        with tempfile.TemporaryDirectory() as profile:
            out = subprocess.run([CHROMIUM, *FLAGS, "--window-size=1280,900", "--hide-scrollbars",
                                  f"--user-data-dir={profile}", "--dump-dom", probe.as_uri()],
                                 capture_output=True, text=True, timeout=120)
    finally:
        probe.unlink()
    found = re.search(r'data-overflow="([^"]*)"', out.stdout)
    assert found, f"{page.name}: the overflow probe did not run: {out.stderr[-500:]}"
    wide = json.loads(html.unescape(found.group(1)))
    assert not wide, f"{page.name}: {len(wide)} element(s) scroll sideways at 1280 px:\n" + "\n".join(wide)
