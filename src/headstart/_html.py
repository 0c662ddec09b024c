"""Self-contained HTML pages for reports: inline CSS, images as data URIs.

Nothing is fetched when a page opens, so it can be mailed, archived or opened
offline, and shows the same everywhere.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

from .data.images import DECODE_ERRORS, decode_failure, load_thumbnail

__all__ = ["Raw", "page", "data_uri", "image", "thumbnail", "table", "escape"]

escape = html.escape

_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1100px;
     padding:1.5em;color:#1d1d1f;background:#fff}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0}td,th{padding:.25em .7em;border-bottom:1px solid #eee;
     text-align:left;vertical-align:top}th{background:#f6f6f8}td.num,th.num{text-align:right}
img.plot{max-width:100%;height:auto;display:block;margin:.6em 0}
img.thumb{width:112px;height:112px;object-fit:cover;border-radius:4px}
.muted{color:#666}.alert{background:#fdecea;border-left:4px solid #c62828;padding:.6em 1em}
.ok{background:#e8f5e9;border-left:4px solid #2e7d32;padding:.6em 1em}
.warn{background:#fff8e1;border-left:4px solid #f9a825;padding:.6em 1em}
.cards{display:flex;flex-wrap:wrap;gap:.8em}.card{width:120px;font-size:12px;word-break:break-all}
code{font-size:13px}
"""


class Raw(str):
    """Markup that :func:`table` inserts as it is (everything else is escaped)."""


def page(title: str, body: str) -> str:
    """A complete HTML document: ``body`` is markup, ``title`` is text."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body>\n{body}\n</body></html>\n")


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image(path: Path, alt: str, css: str = "plot") -> Raw:
    """An ``<img>`` carrying the PNG file at ``path``."""
    return Raw(f'<img class="{css}" alt="{escape(alt)}" src="{data_uri(Path(path).read_bytes())}">')


def thumbnail(path: Path, alt: str, size: int = 224) -> Raw:
    """A small JPEG of the image at ``path``, upright; the reason in text when it cannot be decoded."""
    try:
        picture = load_thumbnail(path, size)
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=85)
    except DECODE_ERRORS as exc:
        reason = decode_failure(Path(path), exc)
        return Raw(f'<span class="muted">cannot show {escape(Path(path).name)}: {escape(reason)}</span>')
    return Raw(f'<img class="thumb" alt="{escape(alt)}" src="{data_uri(buffer.getvalue(), "image/jpeg")}">')


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = ()) -> Raw:
    """An HTML table; cells are escaped unless :class:`Raw`; columns in ``numeric`` align right."""

    def cell(tag: str, i: int, value: object) -> str:
        text = value if isinstance(value, Raw) else escape(str(value))
        css = ' class="num"' if i in numeric else ""
        return f"<{tag}{css}>{text}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return Raw(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
