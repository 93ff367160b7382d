"""A processor without its fold: what every processor pays per event before any work of
its own, measured the way the processors are.

`python -m bench.nofold process NAME [--burst] [--consumer C]` runs the real consumer
(processors/runtime.py) for the consumer group and ledger of processor NAME, with an
`apply` that does nothing: each batch is read, decoded and checked against the contract,
its bots told apart, its fresh events claimed in the ledger `NAME_applied`, committed
and acknowledged, as in `vidpulse process NAME`; no state is loaded, folded or saved and
no output table is written. The bench drains the live backlog with it and runs the end
to end load with four of them. The gap between its rate and a processor's is what that
processor's own work costs; its rate is a ceiling no fold can raise, and the end to end
run without folds says what the machine can carry at all.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import psycopg

from processors.base import Entry, Processor
from processors.registry import PROCESSORS
from processors.runtime import Consumer, tune_process
from vidpulse import logs
from vidpulse.settings import Settings


def _nothing(conn: psycopg.Connection[Any], entries: Sequence[Entry], settings: Settings) -> None:
    """The batch's fresh events, applied to nothing (the ledger already has them)."""


def without_fold(name: str) -> Processor:
    """Processor `name`'s group and ledger, with an `apply` that writes nothing."""
    if name not in PROCESSORS:
        raise ValueError(f"unknown processor {name!r}; choose one of {', '.join(PROCESSORS)}")
    return Processor(name=name, apply=_nothing)


def command(name: str, *, consumer: str, burst: bool = False, fold: bool = False) -> list[str]:
    """The command line of processor `name` without its fold (`fold` True: the processor
    itself, `vidpulse process NAME`). Both have "process NAME" in them, so the bench's CPU
    meter counts either as that processor."""
    runner = "vidpulse" if fold else "bench.nofold"
    return [
        sys.executable,
        "-m",
        runner,
        "process",
        name,
        "--consumer",
        consumer,
        *(["--burst"] if burst else []),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.nofold", description=__doc__)
    parser.add_argument("command", choices=["process"])
    parser.add_argument("name", choices=list(PROCESSORS))
    parser.add_argument("--consumer", default="nofold")
    parser.add_argument("--burst", action="store_true", help="stop once the backlog is drained")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    settings = Settings.from_env()
    logs.configure(settings.log_format, settings.log_level)
    consumer = Consumer(
        without_fold(args.name), settings, consumer=args.consumer, stop=stop, burst=args.burst
    )
    tune_process()
    consumer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
