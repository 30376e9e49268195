"""The building blocks of a self-contained HTML page: headings, sortable tables, layer × head heatmaps whose cells
give their numbers on hover, figures inlined as data: URIs. No server, no network, no external script or font: the
page's one script (sorting) is inline, and hover is the browser's own (`title`)."""
from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1180px;
       padding: 1.5em 2em 4em; color: #1d1d1f; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { margin-top: 2.2em; border-bottom: 2px solid #ddd; }
h3 { margin-top: 1.6em; } .muted { color: #666; } .note { background: #f6f6f2; padding: 0.6em 1em; border-radius: 4px; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 13px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #e4e4e4; text-align: right; }
th { background: #f3f3f3; cursor: pointer; user-select: none; } th.text, td.text { text-align: left; }
table.heatmap td { width: 44px; height: 26px; text-align: center; border: 1px solid #fff; font-size: 11px; }
table.heatmap td.marked { outline: 2px solid #000; outline-offset: -2px; font-weight: bold; }
table.heatmap th { cursor: default; background: none; }
img { max-width: 100%; height: auto; } code, pre { font: 12px ui-monospace, Menlo, monospace; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; white-space: pre-wrap; }
.grid { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
@media print { th { cursor: default; } .grid { display: block; } }
"""

# Click a header to sort its table by that column (numbers by their data-value), again to reverse.
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (header, column) {
    header.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var ascending = header.dataset.order !== "asc";
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
        var nx = parseFloat(x), ny = parseFloat(y), result;
        if (!isNaN(nx) && !isNaN(ny)) { result = nx - ny; } else { result = String(x).localeCompare(String(y)); }
        return ascending ? result : -result;
      });
      rows.forEach(function (row) { body.appendChild(row); });
      table.querySelectorAll("th").forEach(function (h) { delete h.dataset.order; });
      header.dataset.order = ascending ? "asc" : "desc";
    });
  });
});
"""


def escape(text) -> str:
    return html.escape(str(text), quote=True)


def page(title: str, body: Sequence[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body)
            + f"\n<script>{SCRIPT}</script>\n</body></html>\n")


def paragraph(text: str, css: str = "") -> str:
    return f"<p class=\"{css}\">{text}</p>" if css else f"<p>{text}</p>"


def number(value, digits: int = 4, signed: bool = False) -> str:
    """A number as the page prints it (– for a missing one)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else ""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        return "inf" if value > 0 else "-inf"
    if abs(value) < 1e-3 and value != 0 and not signed:
        return f"{value:.2e}"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _raw(value) -> str:
    """What a cell sorts by and a test reads back: the value itself, unrounded."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    return repr(float(value)) if isinstance(value, (float, np.floating)) else str(value)


Column = tuple[str, str, Callable]   # (column of the frame, header, formatter of a value)


def table(frame: pd.DataFrame, columns: Sequence[Column], table_id: str = "", caption: str = "") -> str:
    """A sortable table: each cell shows the formatted value and keeps the raw one in `data-value`."""
    head = "".join(f"<th class=\"{'text' if fmt is str else ''}\">{escape(header)}</th>" for _, header, fmt in columns)
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for column, _, fmt in columns:
            value = row[column]
            shown = escape(fmt(value)) if fmt is not str else escape("" if pd.isna(value) else value)
            css = " class=\"text\"" if fmt is str else ""
            cells.append(f"<td{css} data-column=\"{escape(column)}\" data-value=\"{escape(_raw(value))}\">{shown}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    ident = f" id=\"{escape(table_id)}\"" if table_id else ""
    cap = f"<caption class=\"muted\">{escape(caption)}</caption>" if caption else ""
    return (f"<table class=\"sortable\"{ident}>{cap}<thead><tr>{head}</tr></thead><tbody>" + "".join(rows)
            + "</tbody></table>")


def _colour(value: float, limit: float, diverging: bool) -> str:
    """Red for negative, blue for positive (ΔMRR: red = the head helped), or a white-to-blue scale."""
    if not math.isfinite(value) or limit <= 0:
        return "#f0f0f0"
    share = max(-1.0, min(1.0, value / limit))
    if diverging:
        strength = abs(share)
        r, g, b = (255, int(255 * (1 - 0.75 * strength)), int(255 * (1 - 0.8 * strength))) if share < 0 else \
            (int(255 * (1 - 0.8 * strength)), int(255 * (1 - 0.55 * strength)), 255)
    else:
        strength = (share + 1) / 2 if share < 0 else share
        r, g, b = int(255 * (1 - 0.8 * strength)), int(255 * (1 - 0.5 * strength)), 255
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(values: np.ndarray, tips: list[list[str]], table_id: str, marked: np.ndarray | None = None,
            diverging: bool = True, scale: float = 100.0, rows: Sequence[str] | None = None,
            columns: Sequence[str] | None = None, axes: tuple[str, str] = ("layer", "head")) -> str:
    """A layer × head grid as a table: each cell coloured by its value, showing it × `scale`, its numbers on hover
    (`tips`), the raw value in `data-value`; `marked` cells boxed."""
    n_rows, n_columns = values.shape
    finite = values[np.isfinite(values)]
    limit = float(np.max(np.abs(finite))) if finite.size else 1.0
    rows = rows or [str(i) for i in range(n_rows)]
    columns = columns or [str(j) for j in range(n_columns)]
    head = f"<th>{escape(axes[0])} \\ {escape(axes[1])}</th>" + "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for i in range(n_rows):
        cells = []
        for j in range(n_columns):
            value = values[i, j]
            shown = "" if not np.isfinite(value) else f"{value * scale:+.1f}" if diverging else f"{value * scale:.1f}"
            css = " class=\"marked\"" if marked is not None and marked[i, j] else ""
            cells.append(f"<td{css} style=\"background:{_colour(float(value), limit, diverging)}\" "
                         f"data-row=\"{i}\" data-column=\"{j}\" data-value=\"{escape(_raw(float(value)))}\" "
                         f"title=\"{escape(tips[i][j])}\">{shown}</td>")
        body.append(f"<tr><th>{escape(rows[i])}</th>" + "".join(cells) + "</tr>")
    return (f"<table class=\"heatmap\" id=\"{escape(table_id)}\"><thead><tr>{head}</tr></thead><tbody>"
            + "".join(body) + "</tbody></table>")


def image(path: Path, alt: str) -> str:
    """A PNG the run wrote, inlined."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"<img alt=\"{escape(alt)}\" src=\"data:image/png;base64,{data}\">"


def figure(fig, alt: str) -> str:
    """A matplotlib figure drawn here, inlined as PNG."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return f"<img alt=\"{escape(alt)}\" src=\"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}\">"
