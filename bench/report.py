"""The bench's outputs: one table on the terminal, results JSON and a PNG chart."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).with_name("results")


@dataclass(frozen=True)
class Row:
    """One measured figure beside its yardstick from the same run."""

    figure: str
    value: float
    unit: str
    baseline_name: str
    baseline: float
    target: str
    passed: bool
    ratio: float | None = None
    value_text: str | None = None
    baseline_text: str | None = None
    speedup: bool = False  # the ratio reads "N x" though the target is no speed-up

    def cells(self) -> list[str]:
        value = self.value_text or f"{self.value:,.0f} {self.unit}"
        base = self.baseline_text or f"{self.baseline:,.0f} ({self.baseline_name})"
        # Speed-up targets read "N x"; share-of-yardstick targets a plain fraction.
        if self.ratio is None:
            ratio = ""
        elif self.target.endswith("x") or self.speedup:
            ratio = f"{self.ratio:.1f}x"
        else:
            ratio = f"{self.ratio:.2f}"
        # "(reported)", "(ceiling)": figures beside the targets, not judged.
        verdict = "" if self.target.startswith("(") else "pass" if self.passed else "MISS"
        return [self.figure, value, base, ratio, self.target, verdict]


HEADER = ["figure", "measured", "baseline (same run)", "ratio", "target", ""]


def table(rows: list[Row]) -> str:
    cells = [HEADER, *(r.cells() for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = []
    for i, c in enumerate(cells):
        lines.append("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(h or "result" for h in HEADER) + " |"]
    lines.append("|" + "---|" * len(HEADER))
    for r in rows:
        lines.append("| " + " | ".join(r.cells()) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the run ran on: cores, CPU model, memory, Python, Redis, PostgreSQL."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()),
    }


def service_versions(redis_client: Any, pg_conn: Any) -> dict[str, str]:
    out = {"redis": str(redis_client.info("server").get("redis_version", "?"))}
    row = pg_conn.execute("SHOW server_version").fetchone()
    out["postgresql"] = str(row[0]) if row else "?"
    try:
        out["wrk"] = (
            subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
            .stdout.split("[")[0]
            .strip()
            or "wrk"
        )
    except OSError:
        out["wrk"] = "missing"
    return out


def write_json(results: dict[str, Any], stamp: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"bench-{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    (RESULTS_DIR / "latest.json").write_text(path.read_text())
    return path


def chart(e2e: dict[str, Any], stamp: str) -> Path | None:
    """Throughput and lag over time of the end-to-end run, one PNG."""
    series = e2e.get("series") or []
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(e2e["groups"])
    t = [p["t_s"] for p in series]

    def smooth(key: str, width: int = 8) -> list[float]:
        # Processors commit in batches: a rate per 250 ms sample jumps between 0 and
        # peaks, so throughput is drawn as a rolling mean over about 2 s.
        values = [float(p.get(key, 0)) for p in series]
        out = []
        for i in range(len(values)):
            window = values[max(0, i - width + 1) : i + 1]
            out.append(sum(window) / len(window))
        return out

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11.5, 7), sharex=True)
    top.plot(t, smooth("ingest_eps"), label="ingest (stream appends)", lw=2, color="k")
    for name in names:
        top.plot(t, smooth(f"{name}_eps"), label=f"{name} committed", lw=1)
    top.axhline(e2e["rate"], ls="--", color="grey", lw=1, label=f"offered {e2e['rate']:,.0f}/s")
    top.set_ylabel("events / s (2 s rolling mean)")
    top.set_title(
        f"vidpulse end to end: {e2e['rate']:,.0f} events/s for {e2e['duration_s']:.0f} s "
        "(ingest + every processor on one machine)"
    )
    # Legends beside the plots, where they hide no line (the drain after the load included).
    beside = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0.0}
    top.legend(fontsize=8, **beside)
    top.grid(alpha=0.3)
    for name in names:
        bottom.plot(t, [p.get(f"{name}_lag_s", 0) for p in series], label=name, lw=1)
    bottom.axhline(e2e["lag_target_s"], ls="--", color="red", lw=1, label="target p99")
    bottom.axvline(e2e["duration_s"], ls=":", color="grey", lw=1)
    bottom.set_ylabel("lag (s): oldest unacked entry's age")
    bottom.set_xlabel("seconds since the load started (dotted: load stops)")
    bottom.legend(fontsize=8, **beside)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"e2e-{stamp}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    (RESULTS_DIR / "e2e-latest.png").write_bytes(path.read_bytes())
    return path
