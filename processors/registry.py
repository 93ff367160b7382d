"""The processors by name, as `vidpulse process NAME` knows them."""

from __future__ import annotations

from processors import heatmap, metrics, progress, raw
from processors.base import Processor

PROCESSORS: dict[str, Processor] = {
    p.name: p for p in (raw.PROCESSOR, heatmap.PROCESSOR, progress.PROCESSOR, metrics.PROCESSOR)
}
