"""The HTML pieces `genlab report` and `genlab compare` build their self-contained pages from:
escaped text, inline images (data: URIs), tables, sections and the page with its style sheet."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from typing import Any

SHOWN_WIDTH = 240  # small images are scaled up (pixelated) to about this many CSS pixels

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f; background: #fff;
       max-width: 1180px; margin: 0 auto; padding: 16px 28px 48px; }
h1 { font-size: 1.6em; margin: 0.4em 0; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccd;
     padding-bottom: 4px; margin-top: 1.8em; } h3 { font-size: 1.05em; }
nav a { margin-right: 12px; color: #2255aa; text-decoration: none; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 0.92em; }
th, td { border: 1px solid #d4d4dc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f1f5; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
.facts th { width: 11em; }
.missing { color: #8a5a00; background: #fff6e0; border-left: 4px solid #e0a800; padding: 6px 10px; }
.note { color: #555; font-size: 0.9em; }
.observations { color: #8a1f11; font-weight: 600; }
.idea { font-size: 1.05em; background: #f4f7fc; border-left: 4px solid #2255aa; padding: 8px 12px; }
.images { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #555; margin-top: 4px; }
img.pixels { image-rendering: pixelated; border: 1px solid #ddd; }
code { background: #f3f3f6; padding: 0 3px; border-radius: 3px; }
pre.text { white-space: pre-wrap; background: #f7f7fa; border: 1px solid #e2e2ea; padding: 8px 10px; }
pre.text .prompt { color: #888; } mark { background: #ffe066; }
"""


def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def data_uri(png: bytes) -> str:
    """A PNG as a data: URI, so the page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_tag(png: bytes, alt: str, shown_width: int = SHOWN_WIDTH, css: str = "pixels") -> str:
    """<img> of a PNG; one narrower than `shown_width` is scaled up by a whole factor (pixels kept sharp)."""
    from PIL import Image

    width, height = Image.open(io.BytesIO(png)).size
    scale = max(1, round(shown_width / width)) if width < shown_width else 1
    return (
        f'<img class="{css}" src="{data_uri(png)}" alt="{escape(alt)}" '
        f'width="{width * scale}" height="{height * scale}">'
    )


def figure(png: bytes, caption: str, alt: str | None = None, shown_width: int = SHOWN_WIDTH) -> str:
    return f"<figure>{image_tag(png, alt or caption, shown_width)}<figcaption>{escape(caption)}</figcaption></figure>"


def chart_tag(png: bytes, alt: str) -> str:
    """<img> of a matplotlib chart, at its own size."""
    return image_tag(png, alt, shown_width=0, css="chart")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; columns listed in `numeric` are right-aligned."""
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=number' if c in numeric else ''}>{escape(cell)}</td>" for c, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def missing(text: str) -> str:
    """A notice for data the run does not have, with how to get it (text may hold <code>)."""
    return f'<p class="missing">{text}</p>'


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>\n{body}\n</section>'


def page(title: str, sections: Sequence[tuple[str, str, str]], header: str) -> bytes:
    """The whole document: no script, nothing loaded from anywhere (the CSP says so to the browser)."""
    nav = "".join(f'<a href="#{anchor}">{escape(name)}</a>' for anchor, name, _ in sections)
    body = "\n".join(section(anchor, name, content) for anchor, name, content in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
{header}
<nav>{nav}</nav>
{body}
</body>
</html>
""".encode()


def code(text: str) -> str:
    return f"<code>{escape(text)}</code>"
