"""vidpulse: video-engagement analytics, from player beacons to PostgreSQL."""

from __future__ import annotations

__version__ = "0.1.0"
