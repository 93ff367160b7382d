"""The HTTP load generator of every ingest comparison: wrk, with a Lua script for POSTs.

Both sides of a comparison are driven by the same `wrk` invocation (threads,
connections, duration, bodies); only the URL differs. wrk is installed from Debian
when missing (the bench runs as a developer would, on a machine that may lack it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

LUA_SCRIPT = Path(__file__).with_name("post.lua")
GET_SCRIPT = Path(__file__).with_name("get.lua")


class LoadGenUnavailable(Exception):
    """wrk is not installed and could not be installed."""


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    duration_s: float
    errors: int
    latency_p50_ms: float
    latency_p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "rps": round(self.rps, 1)}


def ensure_tool(binary: str, package: str) -> str:
    """The path of `binary`, installing its Debian `package` when it is missing."""
    found = shutil.which(binary)
    if found:
        return found
    if shutil.which("apt-get"):
        print(f"bench: {binary} is missing; installing {package} with apt-get", flush=True)
        install = ["apt-get", "install", "-y", "-qq", package]
        subprocess.run(install, capture_output=True, check=False)
        found = shutil.which(binary)
        if found is None:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
            subprocess.run(install, capture_output=True, check=False)
            found = shutil.which(binary)
    if found is None:
        raise LoadGenUnavailable(f"{binary} is not installed: apt-get install {package}")
    return found


def ensure_wrk() -> str:
    return ensure_tool("wrk", "wrk")


def run_wrk(
    url: str,
    bodies: Path,
    *,
    duration_s: float,
    connections: int,
    threads: int = 1,
    timeout_s: float = 10.0,
) -> WrkResult:
    """POST the bodies of `bodies` (one a line) to `url` for `duration_s` seconds."""
    return _wrk(url, LUA_SCRIPT, str(bodies), duration_s, connections, threads, timeout_s)


def run_wrk_get(
    url: str, token: str, *, duration_s: float, connections: int, threads: int = 1
) -> WrkResult:
    """GET `url` with a bearer token (empty: none) for `duration_s` seconds."""
    return _wrk(url, GET_SCRIPT, token, duration_s, connections, threads, 10.0)


def _wrk(
    url: str,
    script: Path,
    arg: str,
    duration_s: float,
    connections: int,
    threads: int,
    timeout_s: float,
) -> WrkResult:
    wrk = ensure_wrk()
    cmd = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(script),
        url,
        "--",
        arg,
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration_s + timeout_s + 60, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith("WRKJSON "):
            data = json.loads(line[len("WRKJSON ") :])
            break
    else:
        raise RuntimeError(f"wrk printed no summary (exit {done.returncode}): {done.stderr[-500:]}")
    errors = sum(
        data[k]
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1e6,
        errors=int(errors),
        latency_p50_ms=data["latency_p50_us"] / 1000,
        latency_p99_ms=data["latency_p99_us"] / 1000,
    )
