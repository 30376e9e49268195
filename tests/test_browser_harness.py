"""The headless-browser harness (tests/browser.py) on small pages: scripts run, errors and requests are caught."""

import struct
import time

import pytest
from browser import chromium, render

pytestmark = pytest.mark.skipif(
    chromium() is None,
    reason="no Chromium on this machine (apt-get install chromium); the browser tests need one",
)

SORTING_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>sort</title></head>
<body>
<table id="heads"><thead><tr><th>head</th><th>drop</th></tr></thead>
<tbody>
<tr><td>L3H7</td><td>0.12</td></tr>
<tr><td>L0H1</td><td>0.31</td></tr>
<tr><td>L9H4</td><td>0.05</td></tr>
</tbody></table>
<script>
  // Sort by the drop column, largest first, once the document is ready.
  document.addEventListener("DOMContentLoaded", () => {
    const body = document.querySelector("#heads tbody");
    const rows = [...body.rows].sort((a, b) => b.cells[1].textContent - a.cells[1].textContent);
    rows.forEach(row => body.appendChild(row));
    body.dataset.sorted = "yes";
  });
</script>
</body></html>
"""


def _write(tmp_path, html, name="page.html"):
    page = tmp_path / name
    page.write_text(html, encoding="utf-8")
    return page


def test_clean_page_runs_its_scripts(tmp_path):
    start = time.monotonic()
    out = render(_write(tmp_path, SORTING_PAGE))
    assert time.monotonic() - start < 10
    assert out.console_errors == []
    assert out.requests == []
    lines = [line.split("\t")[0] for line in out.text.splitlines() if line.startswith("L")]
    assert lines == ["L0H1", "L3H7", "L9H4"]
    assert 'data-sorted="yes"' in out.html  # the DOM as scripts left it, not the file as written


def test_console_errors_and_exceptions_are_reported(tmp_path):
    html = """<!doctype html><html><body><p>still here</p>
<script>console.error("boom");</script>
<script>console.log("fine"); console.warn("only a warning");</script>
<script>throw new Error("kaput");</script>
</body></html>"""
    out = render(_write(tmp_path, html))
    assert any(e == "boom" for e in out.console_errors), out.console_errors
    assert any("Uncaught" in e and "kaput" in e for e in out.console_errors), out.console_errors
    assert not any("fine" in e or "only a warning" in e for e in out.console_errors)
    assert len(out.console_errors) == 2
    assert out.text.strip() == "still here"


def test_external_resources_are_listed_and_do_not_hang(tmp_path):
    html = """<!doctype html><html><body><p id="p">loaded</p>
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">
<script src="https://example.com/x.js"></script>
<script>document.getElementById("p").textContent += " and ran";</script>
</body></html>"""
    start = time.monotonic()
    out = render(_write(tmp_path, html))
    assert time.monotonic() - start < 10
    assert out.requests == ["https://example.com/x.js"]  # neither the page itself nor the data: URI
    assert out.text.strip() == "loaded and ran"
    assert any("example.com/x.js" in e for e in out.console_errors), out.console_errors


def test_full_page_screenshot(tmp_path):
    html = """<!doctype html><html><body style="margin:0">
<div style="height:2400px;background:linear-gradient(#036,#fc0)">tall</div>
</body></html>"""
    shot = tmp_path / "shot.png"
    out = render(_write(tmp_path, html), screenshot=shot, width=900)
    assert out.console_errors == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1024
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert width == 900
    assert height >= 2400  # the whole page, not the 800-pixel viewport
