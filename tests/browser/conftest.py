"""Fixtures of the browser tests: Chromium, the clip and the page origin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver

from tests.browser.chromium import BLANK_PAGE, Tab, make_clip, missing_binaries, start_chromium
from tests.browser.servers import PageServer


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """One headless Chromium for the run; each test gets its own origin, so its own storage."""
    missing = missing_binaries()
    if missing:
        pytest.fail(
            f"the browser tests need {', '.join(missing)}: run `python -m tests.browser_deps` "
            f"(make test does) or apt-get install {' '.join(missing)}",
            pytrace=False,
        )
    driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test video, made once per run."""
    if missing_binaries():
        pytest.fail("ffmpeg is needed to make the test video", pytrace=False)
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.webm")


@pytest.fixture
def tab(chromium: webdriver.Chrome) -> Iterator[Tab]:
    """The browser; left on about:blank afterwards, so no page of this test lives on."""
    yield Tab(chromium)
    chromium.get("about:blank")


@pytest.fixture
def site(clip: Path) -> Iterator[PageServer]:
    """A fresh page origin serving the clip and a blank page; tests add their pages."""
    with PageServer() as server:
        server.add_file("/clip.webm", clip, "video/webm")
        server.add("/blank.html", BLANK_PAGE, "text/html; charset=utf-8")
        yield server
