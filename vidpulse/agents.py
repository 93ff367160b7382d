"""What a User-Agent header says: device type, browser, operating system, and whether
the client is a bot.

Parsing is ua-parser's (browser, OS and device families); bot detection is
CrawlerDetect's (crawlers, spiders, link previewers, headless browsers such as
HeadlessChrome and PhantomJS, and HTTP libraries such as curl, python-requests and
Go-http-client), plus ua-parser's device family "Spider". A missing or empty header
is not a bot: real browsers always send one, and a server that relays beacons must
forward the browser's (its own, e.g. python-requests, would make every event a bot's).
"""

from __future__ import annotations

import functools
import threading
from typing import NamedTuple

import ua_parser
from crawlerdetect import CrawlerDetect


class Agent(NamedTuple):
    """A classified User-Agent. device_type is desktop, mobile, tablet, bot or other."""

    device_type: str | None
    browser: str | None
    os: str | None
    is_bot: bool


UNKNOWN = Agent(None, None, None, False)

_MOBILE_OS = frozenset({"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Symbian OS"})
_DESKTOP_OS = frozenset(
    {"Windows", "Mac OS X", "Linux", "Ubuntu", "Chrome OS", "ChromeOS", "Fedora", "FreeBSD",
     "Debian", "OpenBSD", "NetBSD", "Solaris", "Red Hat", "Mint", "macOS"}
)  # fmt: skip

# CrawlerDetect keeps the last match on the instance: one caller at a time.
_detector_lock = threading.Lock()


@functools.cache
def _detector() -> CrawlerDetect:
    return CrawlerDetect()


def is_crawler(user_agent: str) -> bool:
    with _detector_lock:
        return bool(_detector().isCrawler(user_agent))


@functools.lru_cache(maxsize=4096)
def classify(user_agent: str | None) -> Agent:
    """Classify a User-Agent header (cached: a deployment sees few distinct ones)."""
    if not user_agent or not user_agent.strip():
        return UNKNOWN
    result = ua_parser.parse(user_agent)
    browser = result.user_agent.family if result.user_agent else None
    os = result.os.family if result.os else None
    device = result.device.family if result.device else ""
    if device == "Spider" or is_crawler(user_agent):
        return Agent("bot", browser, os, True)
    return Agent(_device_type(user_agent, device, os), browser, os, False)


def _device_type(user_agent: str, device: str, os: str | None) -> str:
    # Android tablets are told from phones by the absence of the "Mobile" token
    # (Google's documented convention); the parser names iPads and some tablets.
    text = user_agent.lower()
    mobile_token = "mobile" in text
    if device == "iPad" or "tablet" in text or (os == "Android" and not mobile_token):
        return "tablet"
    if os in _MOBILE_OS or mobile_token or device in ("iPhone", "iPod"):
        return "mobile"
    if os in _DESKTOP_OS:
        return "desktop"
    return "other"
