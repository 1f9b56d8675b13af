"""The report as one HTML file that needs nothing else: inline CSS, each figure a PNG data
URI, no script and no fetch, so it opens offline, from an e-mail or a bucket alike."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from html import escape

CSS = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 22px; margin: 0 0 12px; }
h2 { font-size: 17px; margin: 28px 0 6px; }
table.summary { border-collapse: collapse; font-size: 13px; margin-bottom: 10px; }
table.summary th { text-align: left; padding: 2px 16px 2px 0; color: #555; font-weight: normal; }
table.summary td { padding: 2px 0; font-family: "DejaVu Sans Mono", monospace; }
p.caption { font-size: 13px; color: #444; max-width: 70em; margin: 0 0 8px; }
figure { margin: 0; }
img { display: block; max-width: 100%; height: auto; border: 1px solid #ddd; }
"""


@dataclass(frozen=True)
class Section:
    """One figure on the page, and its PNG file beside it."""

    title: str
    caption: str
    filename: str  # the PNG written next to the HTML
    png: bytes
    size: tuple[int, int]  # (width, height) in pixels


def render(title: str, summary: list[tuple[str, str]], sections: list[Section], notes: list[str] = ()) -> str:
    rows = "\n".join(f"<tr><th>{escape(label)}</th><td>{escape(value)}</td></tr>" for label, value in summary)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<table class="summary">{rows}</table>',
    ]
    parts += [f'<p class="caption">{escape(note)}</p>' for note in notes]
    for section in sections:
        data = base64.b64encode(section.png).decode("ascii")
        width, height = section.size
        parts += [
            f'<section id="{escape(section.filename.removesuffix(".png"))}">',
            f"<h2>{escape(section.title)}</h2>",
            f'<p class="caption">{escape(section.caption)} ({escape(section.filename)})</p>',
            f'<figure><img src="data:image/png;base64,{data}" alt="{escape(section.title)}" '
            f'width="{width}" height="{height}"></figure>',
            "</section>",
        ]
    parts.append("</body></html>\n")
    return "\n".join(parts)
