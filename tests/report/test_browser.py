"""The report as a person sees it: opened in headless Chromium (Debian's `chromium`, which
tests/setup.d/30-chromium.sh installs), screenshotted, and every figure found on screen
pixel for pixel, under its title."""

from __future__ import annotations

import re

import pytest

from .browser import Elements, chromium, dump_dom, locate, rgb, screenshot
from .test_report import TITLES

pytestmark = pytest.mark.skipif(
    chromium() is None, reason="needs headless Chromium: apt-get install chromium (tests/setup.d/30-chromium.sh)"
)
WIDTH = 1280  # wider than any figure, so each is drawn at its own size


def figures_on_screen(page, shot):
    """Each img of the page (in order) -> where its PNG's pixels are on a screenshot of a
    window tall enough for the whole page, or None where the figure did not render."""
    images = Elements(page.read_text()).images
    pngs = [rgb(page.parent / f"{section}.png") for section in re.findall(r'<section id="([^"]+)">', page.read_text())]
    height = sum(png.shape[0] for png in pngs) + 160 * len(pngs) + 500
    screen = screenshot(page, shot, (WIDTH, height))
    assert len(images) == len(pngs)
    return screen, [locate(screen, png) for png in pngs], pngs


def test_the_report_renders_every_figure_under_its_title(report_dir, tmp_path):
    page = report_dir / "report.html"
    dom = Elements(dump_dom(page))  # what Chromium parsed
    assert dom.headings[1:] == TITLES
    assert [image.get("alt") for image in dom.images] == TITLES

    screen, places, pngs = figures_on_screen(page, tmp_path / "shot.png")
    assert screen.std() > 20 and (screen < 128).any(axis=-1).mean() > 0.01  # not a blank page
    assert all(place is not None for place in places), [TITLES[i] for i, p in enumerate(places) if p is None]
    # in the page's order, one below the other, none overlapping
    tops = [top for top, _ in places]
    assert tops == sorted(tops)
    assert all(tops[i] + pngs[i].shape[0] <= tops[i + 1] for i in range(len(tops) - 1))


def test_a_figure_that_does_not_render_is_caught(report_dir, tmp_path):
    """The check above can fail: break one image's data and it is missing from the screen."""
    broken = tmp_path / "report"
    broken.mkdir()
    for path in report_dir.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    html = (broken / "report.html").read_text()
    start = html.index("data:image/png;base64,", html.index('<section id="norm-by-position">'))
    cut = start + len("data:image/png;base64,") + 2000
    (broken / "report.html").write_text(html[:cut] + "AAAA" + html[cut + 4 :])  # damaged PNG bytes
    _, places, _ = figures_on_screen(broken / "report.html", tmp_path / "shot.png")
    missing = [TITLES[i] for i, place in enumerate(places) if place is None]
    assert missing == ["Token norm by position (resid_post)"]
