"""Looking at a report as a person would: headless Chromium (Debian's `chromium`), its
screenshot and the DOM it parsed, and where each figure's pixels landed on the screen."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-gpu",
    "--force-device-scale-factor=1",
    "--hide-scrollbars",
]


def chromium() -> str | None:
    return shutil.which("chromium")


def screenshot(page: Path, out: Path, size: tuple[int, int]) -> np.ndarray:
    """The page rendered in a window of `size` (width, height) pixels, as RGB [H, W, 3]."""
    subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--screenshot={out}",
            f"--window-size={size[0]},{size[1]}",
            page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return np.asarray(Image.open(out).convert("RGB"))


def dump_dom(page: Path) -> str:
    """The DOM as Chromium parsed it, serialised."""
    done = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, "--dump-dom", page.resolve().as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
        text=True,
    )
    return done.stdout


class Elements(HTMLParser):
    """The text of every h1/h2 and the attributes of every img, in document order."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.images: list[dict] = []
        self._in_heading = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag in ("h1", "h2"):
            self._in_heading = True
            self.headings.append("")
        elif tag == "img":
            self.images.append(dict(attrs))

    def handle_endtag(self, tag):
        if tag in ("h1", "h2"):
            self._in_heading = False

    def handle_data(self, data):
        if self._in_heading:
            self.headings[-1] += data


def rgb(png: bytes | Path) -> np.ndarray:
    import io

    source = io.BytesIO(png) if isinstance(png, bytes) else png
    return np.asarray(Image.open(source).convert("RGB"))


def locate(screen: np.ndarray, image: np.ndarray, match: float = 0.999) -> tuple[int, int] | None:
    """Where `image` appears on `screen` pixel for pixel (its top-left corner), or None: its
    most varied row is searched for in every screen row, then the whole image compared."""
    h, w = image.shape[:2]
    row = int(np.argmax([len(np.unique(image[i].view(np.dtype((np.void, 3))))) for i in range(h)]))
    key = image[row].tobytes()
    for y in range(row, screen.shape[0] - (h - row) + 1):
        line = screen[y].tobytes()
        start = line.find(key)
        while start >= 0:
            if start % 3 == 0:
                x, top = start // 3, y - row
                if (screen[top : top + h, x : x + w] == image).all(axis=-1).mean() >= match:
                    return top, x
            start = line.find(key, start + 1)
    return None
