"""Debian's headless Chromium driven by selenium, and the page the tracker runs in."""

from __future__ import annotations

import html
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

T = TypeVar("T")

# The network is closed: without the background-networking flags Chromium keeps trying
# (and logging) connections to Google services.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
    # Headless Chromium says "HeadlessChrome", which the processors count as a bot's;
    # the page plays a person watching.
    "--user-agent=Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
)
CLIP_SECONDS = 60


def missing_binaries() -> list[str]:
    """The Debian packages the browser tests need that are not installed."""
    wanted = {"chromium": "chromium", "chromedriver": "chromium-driver", "ffmpeg": "ffmpeg"}
    return [package for binary, package in wanted.items() if shutil.which(binary) is None]


def start_chromium(profile: Path) -> webdriver.Chrome:
    """Headless Chromium with a fresh profile, through Debian's chromedriver."""
    options = Options()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.binary_location = str(shutil.which("chromium"))
    service = Service(executable_path=str(shutil.which("chromedriver")))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_script_timeout(30)
    return driver


def make_clip(path: Path) -> Path:
    """A CLIP_SECONDS-second, 160x90 VP8 test pattern (no audio) made with ffmpeg."""
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc=size=160x90:rate=10:duration={CLIP_SECONDS}",
            "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "50k",
            "-g", "20", "-an", str(path),
        ],
        check=True,
        timeout=120,
    )  # fmt: skip
    return path


def eventually(probe: Callable[[], T | Literal[False] | None], what: str, timeout: float = 30) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}; last: {value!r}")
        time.sleep(0.1)


def watch_page(
    ingest_origin: str,
    video_id: str,
    *,
    viewer_id: str | None = None,
    script_src: str | None = None,
    script_attrs: dict[str, str] | None = None,
    video_attrs: dict[str, str] | None = None,
) -> str:
    """An HTML page with one tracked <video> of the clip and the tracker from the ingest."""
    script = {
        "src": script_src or f"{ingest_origin}/v1/tracker.js",
        "data-endpoint": f"{ingest_origin}/v1/events",
        "data-debug": "",
        **(script_attrs or {}),
    }
    video = {
        "id": "v",
        "data-vidpulse-video-id": video_id,
        "muted": "",
        "playsinline": "",
        "preload": "auto",
        "src": "/clip.webm",
        **({"data-vidpulse-viewer-id": viewer_id} if viewer_id else {}),
        **(video_attrs or {}),
    }
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>watch</title>"
        f"<script {_attrs(script)}></script></head>"
        f"<body><video {_attrs(video)}></video></body></html>"
    )


def _attrs(attrs: dict[str, str]) -> str:
    return " ".join(f'{k}="{html.escape(v)}"' if v else k for k, v in attrs.items())


BLANK_PAGE = "<!doctype html><html><head><title>elsewhere</title></head><body></body></html>"


class Tab:
    """The browser, seen from a test: open pages, drive the <video id=v>, read the tracker."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def open(self, url: str) -> None:
        self.driver.get(url)

    def open_tracked(self, url: str) -> None:
        """Open a watch page; return once the tracker runs and the video's duration is known."""
        self.open(url)
        eventually(
            lambda: self.js("return !!(window.vidpulse && window.vidpulse._debug)"),
            "the tracker to load",
        )
        eventually(
            lambda: self.js("const v = document.getElementById('v'); return v.duration > 0"),
            "the video's metadata",
        )

    def play(self, rate: float) -> None:
        self.js(
            "const v = document.getElementById('v'); v.playbackRate = arguments[0]; v.play();",
            rate,
        )

    def pause(self) -> None:
        self.js("document.getElementById('v').pause();")

    def seek(self, position: float) -> float:
        """Seek to `position`; returns the playhead read in the same script, just before."""
        return float(
            self.js(
                "const v = document.getElementById('v'); const before = v.currentTime;"
                " v.currentTime = arguments[0]; return before;",
                position,
            )
        )

    def position(self) -> float:
        return float(self.js("return document.getElementById('v').currentTime"))

    def wait_position(self, at_least: float, timeout: float = 30) -> float:
        return eventually(
            lambda: (p := self.position()) >= at_least and p, f"position >= {at_least}", timeout
        )

    def wait_ended(self, timeout: float = 30) -> None:
        eventually(lambda: self.js("return document.getElementById('v').ended"), "ended", timeout)

    def debug(self) -> dict[str, Any]:
        """The tracker's read-only debug state (window.vidpulse._debug)."""
        state: dict[str, Any] = self.js("return window.vidpulse._debug")
        return state

    def wait_delivered(self, timeout: float = 30) -> dict[str, Any]:
        """Wait until the tracker holds nothing unconfirmed; return its debug state."""
        return eventually(
            lambda: (d := self.debug())["queued"] == 0 and d["beaconed"] == 0 and d,
            "the tracker to deliver every event",
            timeout,
        )

    def stored_queue(self) -> list[dict[str, Any]]:
        """What the tracker keeps in this origin's localStorage: [{e: event, b: beaconed}]."""
        stored: list[dict[str, Any]] = self.js(
            "return JSON.parse(localStorage.getItem('vidpulse:queue') || '[]')"
        )
        return stored
