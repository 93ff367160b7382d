"""Where the CPU goes while a benchmark runs: CPU time per part of the pipeline.

A `CpuMeter` samples `/proc` (Linux) every half second: the user and system time of
each process of a part, and the whole machine's busy time (`/proc/stat`). The parts:

- the bench's own child processes: the ingest (uvicorn and its workers), each
  `vidpulse process NAME` (the processor NAME), wrk;
- PostgreSQL's server processes, from `pg_stat_activity`: a processor's connections by
  their application_name (`vidpulse-NAME`), the other clients together, and the
  server's own processes (checkpointer, WAL writer, autovacuum, ...) together;
- Redis's server process (`INFO server`'s process_id).

Only time spent between `start()` and `stop()` (the load) counts, reported as cores:
CPU seconds over wall seconds. A server that is not on this machine (elsewhere, or in a
container, whose process ids are not this machine's) is left out of the figures.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
import redis

_TICK = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")
_PG_PROCESSES = (
    "SELECT pid, coalesce(application_name, ''), coalesce(backend_type, '') FROM pg_stat_activity"
)


def cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(user + system CPU time so far, start time in seconds since boot) of process
    `pid`; None: it is gone."""
    try:
        fields = (_PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK, int(fields[19]) / _TICK


def uptime() -> float:
    """Seconds since boot (the clock of a process's start time)."""
    return float((_PROC / "uptime").read_text().split()[0])


def machine_busy_seconds() -> float:
    """CPU time the machine's cores spent on anything but idling and waiting for I/O."""
    values = [int(v) for v in (_PROC / "stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _TICK


def _command(pid: int) -> tuple[str, list[str]]:
    try:
        comm = (_PROC / str(pid) / "comm").read_text().strip()
        cmdline = (_PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "", []
    return comm, [a.decode(errors="replace") for a in cmdline if a]


def _children() -> dict[int, list[int]]:
    """Every process's children, by parent id."""
    children: defaultdict[int, list[int]] = defaultdict(list)
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            children[parent].append(int(entry.name))
    return children


def _descendants(root: int) -> list[int]:
    children = _children()
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def child_part(argv: list[str], comm: str) -> str | None:
    """The part a child process of the bench belongs to, from its command line."""
    if comm == "wrk":
        return "wrk"
    if any("uvicorn" in a for a in argv[:3]) or "multiprocessing" in " ".join(argv[:3]):
        return "ingest"  # uvicorn, and its workers (multiprocessing's spawn children)
    if "process" in argv:
        at = argv.index("process")
        if at + 1 < len(argv):
            return f"processor {argv[at + 1]}"
    return None


def postgres_part(application: str, backend_type: str) -> str:
    """The part a PostgreSQL server process belongs to."""
    if application.startswith("vidpulse-"):
        return f"postgres {application.removeprefix('vidpulse-')}"
    if backend_type == "client backend":
        return "postgres other clients"
    return "postgres server"


class CpuMeter(threading.Thread):
    """Samples the parts' CPU time until `close()`; counts what falls between `start()`
    and `stop()`; `result()` says it in cores."""

    def __init__(self, database_url: str, redis_url: str, every_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every_s = every_s
        self._database_url, self._redis_url = database_url, redis_url
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._last: dict[int, float] = {}  # pid -> CPU seconds at its last sample
        self._counting = False
        self._since = 0.0  # when counting started, in seconds since boot
        self._sampled = threading.Event()  # a first sample is in
        self._parts: defaultdict[str, float] = defaultdict(float)
        self._window: list[float] = []  # [start, stop] wall times
        self._busy: list[float] = []  # machine busy seconds at start, at stop
        self.unmeasured: set[str] = set()  # servers not on this machine
        self.errors: list[str] = []

    # -- the sampling thread ------------------------------------------------------

    def run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        client: redis.Redis | None = None
        try:
            conn = psycopg.connect(self._database_url, autocommit=True, connect_timeout=5)
            client = redis.Redis.from_url(self._redis_url)
            while not self._closed.is_set():
                self._sample(conn, client)
                self._sampled.set()
                self._closed.wait(self.every_s)
        except Exception as exc:  # the figures go without this part, never the bench
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            if conn is not None:
                conn.close()
            if client is not None:
                client.close()

    def _processes(self, conn: psycopg.Connection[Any], client: redis.Redis) -> dict[int, str]:
        parts: dict[int, str] = {}
        for pid in _descendants(os.getpid()):
            comm, argv = _command(pid)
            part = child_part(argv, comm)
            if part is not None:
                parts[pid] = part
        own = conn.info.backend_pid
        for pid, application, backend_type in conn.execute(_PG_PROCESSES).fetchall():
            if pid == own:
                continue
            if not _command(pid)[0].startswith("postgres"):
                self.unmeasured.add("postgres")
                continue
            parts[pid] = postgres_part(application, backend_type)
        with contextlib.suppress(redis.RedisError):
            pid = int(client.info("server").get("process_id", 0))
            if pid and "redis" in _command(pid)[0]:
                parts[pid] = "redis"
            else:
                self.unmeasured.add("redis")
        return parts

    def _sample(self, conn: psycopg.Connection[Any], client: redis.Redis) -> None:
        parts = self._processes(conn, client)
        with self._lock:
            for pid, part in parts.items():
                read = cpu_seconds(pid)
                if read is None:
                    continue
                now, started = read
                before = self._last.get(pid)
                if before is None:
                    # First seen: all its time counts if it started while counting.
                    before = 0.0 if self._counting and started >= self._since else now
                if self._counting:
                    self._parts[part] += max(0.0, now - before)
                self._last[pid] = now

    # -- the caller's side --------------------------------------------------------

    def start_counting(self) -> None:
        """Count from now (the load starts), once a first sample is in."""
        self._sampled.wait(timeout=10)
        with self._lock:
            self._counting = True
            self._since = uptime()
            self._window = [time.monotonic()]
            self._busy = [machine_busy_seconds()]

    def stop_counting(self) -> None:
        """Stop counting (the load is over); waits for one more sample first."""
        time.sleep(self.every_s * 1.5)
        with self._lock:
            self._counting = False
            self._window.append(time.monotonic())
            self._busy.append(machine_busy_seconds())

    def close(self) -> None:
        self._closed.set()
        self.join(timeout=10)

    def result(self) -> dict[str, Any]:
        """Cores each part used while counting, the machine's busy cores, its core count."""
        with self._lock:
            if len(self._window) < 2:
                return {"errors": self.errors}
            wall = self._window[1] - self._window[0]
            parts = {p: round(s / wall, 3) for p, s in sorted(self._parts.items())}
            busy = round((self._busy[1] - self._busy[0]) / wall, 3)
        return {
            "window_s": round(wall, 2),
            "cores": os.cpu_count(),
            "machine_busy_cores": busy,
            "parts": parts,
            "not_on_this_machine": sorted(self.unmeasured),
            "errors": self.errors,
        }
