"""The bench's CPU meter (bench/cpu.py): time of busy processes lands in their part,
idle ones stay near zero, and what ran before the count started is left out."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from bench.cpu import CpuMeter, child_part, postgres_part
from vidpulse.settings import Settings

BURN = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass\n"
BURN_THEN_SLEEP = BURN + "time.sleep(5)\n"
SLEEP = "import time\ntime.sleep({s})\n"


def test_parts_are_named_from_command_lines_and_pg_stat_activity() -> None:
    assert child_part([sys.executable, "-m", "vidpulse", "process", "heatmap"], "python") == (
        "processor heatmap"
    )
    assert child_part([sys.executable, "-m", "uvicorn", "ingest.app:app"], "python") == "ingest"
    assert child_part(["wrk", "-t1", "http://x"], "wrk") == "wrk"
    assert child_part([sys.executable, "-c", "pass"], "python") is None
    assert postgres_part("vidpulse-progress", "client backend") == "postgres progress"
    assert postgres_part("psql", "client backend") == "postgres other clients"
    assert postgres_part("", "checkpointer") == "postgres server"


def _child(code: str, name: str) -> subprocess.Popen[bytes]:
    # "process NAME" in its arguments makes it the processor NAME to the meter.
    return subprocess.Popen([sys.executable, "-c", code, "process", name])


def test_busy_processes_and_their_queries_count_idle_ones_do_not(settings: Settings) -> None:
    warm = _child(BURN_THEN_SLEEP.format(s=1.0), "before")  # busy before the count only
    time.sleep(1.2)
    meter = CpuMeter(settings.database_url, settings.redis_url, every_s=0.2)
    meter.start()
    url = make_conninfo(settings.database_url, application_name="vidpulse-burner")
    stop = threading.Event()

    def query_load() -> None:  # PostgreSQL busy on behalf of "burner"
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("SELECT count(*) FROM generate_series(1, 200000)")

    children: list[subprocess.Popen[bytes]] = []
    loader = threading.Thread(target=query_load)
    try:
        meter.start_counting()
        children = [_child(BURN.format(s=2.0), "burner"), _child(SLEEP.format(s=2.0), "idler")]
        loader.start()
        for child in children:
            child.wait(timeout=30)
        meter.stop_counting()
    finally:
        stop.set()
        if loader.is_alive():
            loader.join(timeout=30)
        meter.close()
        for child in [warm, *children]:
            child.kill()
            child.wait(timeout=30)
    result: dict[str, Any] = meter.result()
    parts = result["parts"]
    assert result["errors"] == []
    assert result["window_s"] == pytest.approx(2.3, abs=1.0)
    # A busy loop gets most of a core even on a loaded 2-core machine; a sleep next to none.
    assert parts["processor burner"] >= 0.4, parts
    assert parts.get("processor idler", 0.0) < 0.1, parts
    assert parts.get("processor before", 0.0) < 0.1, parts  # its second of work came before
    assert parts["postgres burner"] >= 0.1, parts
    assert result["machine_busy_cores"] >= parts["processor burner"], result
