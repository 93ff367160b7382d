"""The `vidpulse` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import psycopg
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from vidpulse import logs
from vidpulse.redisclient import cluster_url, sync_client
from vidpulse.settings import ConfigError, Settings

EXIT_FAILURE = 1
EXIT_USAGE = 2
_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")


class CommandError(Exception):
    """A command failed for a reason one line can tell."""


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from processors.streams import ensure_groups
    from vidpulse.database import MigrationFailed, migrate
    from vidpulse.keys import Keys

    try:
        done = migrate(settings.database_url)
    except psycopg.OperationalError as exc:
        raise CommandError(
            f"cannot reach PostgreSQL at {_safe_url(settings.database_url)}: {_first_line(exc)}"
        ) from None
    except MigrationFailed as exc:
        raise CommandError(str(exc)) from None
    try:
        client = sync_client(settings.redis_url, socket_connect_timeout=3)
        for stream in Keys.of(settings).partition_streams:
            ensure_groups(client, stream)
    except (RedisError, OSError) as exc:
        raise CommandError(
            f"cannot reach Redis at {_safe_url(settings.redis_url)}: {exc}"
        ) from None
    what = "created and migrated" if "created the database" in done else "migrated"
    steps = "; ".join(step for step in done if step != "created the database")
    print(
        f"database {what}: {_safe_url(settings.database_url)} "
        f"({steps or 'already current'}); consumer groups ready on {settings.stream}"
        + (f" ({settings.partitions} partitions)" if settings.partitions > 1 else "")
    )
    return 0


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from ingest.server import uvicorn_options
    from vidpulse.telemetry import multiprocess_dir

    print(
        f"vidpulse ingest listening on http://{args.host}:{args.port} (POST /v1/events)", flush=True
    )
    # Several workers write their metrics to files that any worker's /metrics sums up.
    with multiprocess_dir(args.workers):
        uvicorn.run(
            "ingest.app:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level="warning",
            **uvicorn_options(settings),
        )
    return 0


def cmd_process(settings: Settings, args: argparse.Namespace) -> int:
    from processors.registry import PROCESSORS
    from processors.runtime import Consumer, tune_process
    from vidpulse.database import SchemaBehind

    processor = PROCESSORS.get(args.name)
    if processor is None:
        raise ConfigError(f"unknown processor {args.name!r}; choose one of {', '.join(PROCESSORS)}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    consumer = Consumer(
        processor,
        settings,
        consumer=args.consumer or default_consumer_name(),
        stop=stop,
        burst=args.burst,
        exit_if_behind=args.exit_if_behind,
    )
    tune_process()
    try:
        with _metrics_server(settings, processor.name, args.metrics_port, args.metrics_port_tries):
            consumer.run()
    except SchemaBehind as exc:
        raise CommandError(str(exc)) from None
    return 0


@contextlib.contextmanager
def _metrics_server(settings: Settings, name: str, port: int | None, tries: int) -> Iterator[None]:
    """Serve the process's metrics on `port` (else VIDPULSE_METRICS_PORT; 0 = off)."""
    from vidpulse.telemetry import serve_metrics

    port = settings.metrics_port if port is None else port
    if not port:
        yield
        return
    try:
        server = serve_metrics(settings, port=port, host=settings.metrics_host, tries=tries)
    except OSError as exc:
        where = f"{port}" if tries == 1 else f"{port}-{port + tries - 1}"
        raise CommandError(
            f"cannot serve metrics on {settings.metrics_host}:{where}: {exc.strerror or exc}"
        ) from None
    print(f"metrics: {name} {server.url}", flush=True)
    try:
        yield
    finally:
        server.close()


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from tools.supervisor import PipelineFailed, check_port_free, run_pipeline

    # No dashboard token configured: one for this run (its children inherit it).
    token = None if settings.admin_token_list else secrets.token_urlsafe(32)
    if token is not None:
        os.environ["VIDPULSE_ADMIN_TOKENS"] = token
    try:
        check_port_free(args.host, args.port)
        cmd_migrate(settings, args)
        return run_pipeline(
            host=args.host,
            port=args.port,
            metrics_port=args.metrics_port,
            metrics_host=settings.metrics_host,
            dashboard=(settings.dashboard_host, settings.dashboard_port, token),
        )
    except PipelineFailed as exc:
        raise CommandError(str(exc)) from None


# -- dashboard and catalogue --------------------------------------------------------


def cmd_dashboard(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    if not settings.admin_token_list:
        raise ConfigError(
            "VIDPULSE_ADMIN_TOKENS is not set: give the dashboard at least one token "
            "(24+ characters, comma-separated)"
        )
    host = args.host or settings.dashboard_host
    sock = _listen(host, args.port or settings.dashboard_port, args.port_tries)
    port = sock.getsockname()[1]
    print(f"dashboard: http://{host}:{port}/ (API under /api/v1)", flush=True)
    config = uvicorn.Config(
        "dashboard.app:app_from_env", factory=True, log_level="warning", access_log=False
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _listen(host: str, port: int, tries: int) -> socket.socket:
    """A listening socket on the first free port of port .. port+tries-1."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for candidate in range(port, min(65536, port + max(1, tries))):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError:
            sock.close()
            continue
        sock.listen(2048)
        sock.set_inheritable(True)
        return sock
    raise CommandError(f"no free port for the dashboard on {host} from {port} ({tries} tried)")


def cmd_catalogue(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from dashboard.catalogue import BadFile, import_csv

    try:
        report = import_csv(settings, Path(args.file))
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        print(f"vidpulse: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    except (BadFile, UnicodeDecodeError) as exc:
        print(f"vidpulse: {args.file}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except psycopg.OperationalError as exc:
        raise CommandError(
            f"cannot reach PostgreSQL at {_safe_url(settings.database_url)}: {_first_line(exc)}"
        ) from None
    for bad in report.bad:
        print(f"{args.file}:{bad.line}: {bad.reason}", file=sys.stderr)
    print(
        f"catalogue: {report.created + report.updated} rows imported "
        f"({report.created} created, {report.updated} updated), {len(report.bad)} bad rows"
    )
    return EXIT_FAILURE if report.bad and not (report.created + report.updated) else 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from vidpulse.keys import Keys
    from vidpulse.status import gather, render

    client = sync_client(settings.redis_url, socket_connect_timeout=3)
    try:
        report = gather(client, Keys.of(settings))
    except (RedisError, OSError) as exc:
        raise CommandError(
            f"cannot reach Redis at {_safe_url(settings.redis_url)}: {exc}"
        ) from None
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from vidpulse import deadletters
    from vidpulse.keys import Keys

    client = sync_client(settings.redis_url, socket_connect_timeout=3)
    keys = Keys.of(settings)
    # Each partition has its own dead letters, next to its stream (one slot).
    parts = [keys.partition(p) for p in range(keys.partitions)]
    where = keys.dlq if keys.partitions == 1 else f"the {keys.partitions} partitions' :dlq"
    if args.action != "drop" and (args.ids or args.all):
        raise ConfigError(f"dlq {args.action} takes no ids and no --all")
    if args.action == "drop" and sum((bool(args.ids), args.group is not None, args.all)) != 1:
        raise ConfigError("dlq drop needs dead-letter ids, or --group G, or --all (one of them)")
    bad = [i for i in args.ids if not _STREAM_ID.fullmatch(i)]
    if bad:
        raise ConfigError(f"not a dead-letter id (like 1700000000000-0): {bad[0]}")
    try:
        if args.action == "replay":
            replayed, broken = 0, []
            for part in parts:
                report = deadletters.replay(client, part, args.group)
                replayed += report.replayed
                broken += report.broken
            onto = keys.stream if keys.partitions == 1 else f"{keys.stream} (its partitions)"
            print(f"replayed {replayed} dead letters onto {onto}")
            for entry_id, why in broken:
                print(f"not replayed {entry_id}: {why}")
            if broken:
                raise CommandError(
                    f"{len(broken)} dead letters could not be replayed and stay in "
                    f"{where}; remove them with `vidpulse dlq drop ID...`"
                )
        elif args.action == "drop":
            n = sum(
                deadletters.drop(client, part, ids=args.ids, group=args.group, everything=args.all)
                for part in parts
            )
            print(f"dropped {n} dead letters from {where}")
        else:
            left = args.count
            for p, part in enumerate(parts):
                for item in deadletters.list_dead(client, part, left):
                    if keys.partitions > 1:
                        item["partition"] = str(p)
                    print(json.dumps(item))
                    left -= 1
                if left <= 0:
                    break
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise CommandError(
            f"cannot reach Redis at {_safe_url(settings.redis_url)}: {exc}"
        ) from None
    except RedisError as exc:
        raise CommandError(f"Redis refused: {_first_line(exc)}") from None
    return 0


def cmd_retention(settings: Settings, args: argparse.Namespace) -> int:
    from processors.raw import drop_expired_partitions

    days = settings.raw_retention_days
    try:
        with psycopg.connect(settings.database_url, connect_timeout=10) as conn, conn.transaction():
            dropped = drop_expired_partitions(conn, days, dry_run=args.dry_run)
    except psycopg.OperationalError as exc:
        raise CommandError(
            f"cannot reach PostgreSQL at {_safe_url(settings.database_url)}: {_first_line(exc)}"
        ) from None
    except psycopg.Error as exc:
        raise CommandError(f"retention failed: {_first_line(exc)}") from None
    verb = "would drop" if args.dry_run else "dropped"
    for name, rows in dropped:
        print(f"{verb} {name} ({rows} rows)")
    if not dropped:
        print(f"no video_events partition lies wholly more than {days} days back")
    return 0


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from tools.simulate import main_progress, simulate

    # With --json, stdout carries only the report; the banner goes to stderr.
    print(
        f"simulating tracker traffic: {args.rate:g} events/s for {args.duration:g}s to {args.url}",
        file=sys.stderr if args.json else sys.stdout,
        flush=True,
    )
    report = simulate(
        args.url,
        rate=args.rate,
        duration=args.duration,
        seed=args.seed,
        videos=args.videos,
        viewers=args.viewers,
        window_ms=args.batch_window_ms,
        max_batch=args.max_batch,
        connections=args.connections,
        progress=None if args.json else main_progress,
    )
    print(json.dumps(report.as_dict()) if args.json else report.summary(), flush=True)
    if report.errors and not report.accepted:
        raise CommandError(f"nothing was accepted by {args.url}: {report.first_error}")
    return 0


# -- forget: erase one viewer (docs/privacy.md) ----------------------------------------


def cmd_forget(settings: Settings, args: argparse.Namespace) -> int:
    from tools.forget import BadViewerId, check_viewer_id, forget
    from vidpulse.keys import Keys

    try:
        check_viewer_id(args.viewer_id)
    except BadViewerId as exc:
        print(f"vidpulse: {exc}", file=sys.stderr)
        return EXIT_USAGE
    client = sync_client(settings.redis_url, socket_connect_timeout=3)
    try:
        with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=5) as conn:
            erased = forget(conn, client, Keys.of(settings), args.viewer_id)
    except psycopg.OperationalError as exc:
        raise CommandError(
            f"cannot reach PostgreSQL at {_safe_url(settings.database_url)}: {_first_line(exc)}"
            " (nothing or part erased: run it again)"
        ) from None
    except (RedisError, OSError) as exc:
        raise CommandError(
            f"cannot reach Redis at {_safe_url(settings.redis_url)}: {exc}"
            " (part erased: run it again)"
        ) from None
    finally:
        client.close()
    print(erased.summary())
    return 0


def _positive(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidpulse", description="Video-engagement analytics pipeline."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "migrate", help="create the database if missing and apply the migrations it lacks"
    )
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("ingest", help="serve the ingest app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("process", help="run one processor")
    p.add_argument("name", help="raw, heatmap, progress or metrics")
    p.add_argument("--consumer", help="consumer name (default: HOSTNAME-PID)")
    p.add_argument("--burst", action="store_true", help="exit once nothing is new or pending")
    p.add_argument(
        "--exit-if-behind",
        action="store_true",
        help="exit 1 when the database lacks a migration, rather than wait for it",
    )
    p.add_argument(
        "--metrics-port",
        type=_port,
        help="serve Prometheus metrics on this port (default VIDPULSE_METRICS_PORT; 0 = off)",
    )
    p.add_argument(
        "--metrics-port-tries",
        type=_positive(int),
        default=1,
        help="when the metrics port is taken, try the next ones: this many ports in all",
    )
    p.set_defaults(func=cmd_process)

    p = sub.add_parser("run", help="migrate, then ingest and every processor, until Ctrl-C")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--metrics-port",
        type=_port,
        default=9101,
        help="first port for the processors' metrics, the next free ones after it (0 = off)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("dashboard", help="serve the dashboard (JSON API and pages)")
    p.add_argument("--host", help="default VIDPULSE_DASHBOARD_HOST (127.0.0.1)")
    p.add_argument("--port", type=int, help="default VIDPULSE_DASHBOARD_PORT (8001)")
    p.add_argument(
        "--port-tries", type=int, default=1, help="when the port is taken, try the next ones"
    )
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("catalogue", help="fill the catalogue of videos (titles, courses)")
    p.add_argument("action", choices=["import"])
    p.add_argument("file", help="CSV with a header: video_id,title[,course_id,course_title,...]")
    p.set_defaults(func=cmd_catalogue)

    p = sub.add_parser("status", help="per consumer group: consumers, pending, lag, dead letters")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("dlq", help="list, replay or drop dead letters")
    p.add_argument("action", choices=["list", "replay", "drop"])
    p.add_argument("ids", nargs="*", metavar="ID", help="drop: these dead letters")
    p.add_argument("--group", help="replay or drop only this group's dead letters")
    p.add_argument("--all", action="store_true", help="drop: every dead letter")
    p.add_argument("--count", type=int, default=100, help="how many to list")
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser(
        "retention", help="drop video_events partitions older than VIDPULSE_RAW_RETENTION_DAYS"
    )
    p.add_argument("--dry-run", action="store_true", help="only say what would be dropped")
    p.set_defaults(func=cmd_retention)

    p = sub.add_parser(
        "simulate", help="send realistic tracker traffic at a steady event rate to an ingest"
    )
    p.add_argument("--rate", type=_positive(float), default=100.0, help="events per second")
    p.add_argument("--duration", type=_positive(float), default=30.0, help="seconds to send for")
    p.add_argument("--url", default="http://127.0.0.1:8000/v1/events", help="the events URL")
    p.add_argument("--seed", type=int, help="audience seed (default: random; printed)")
    p.add_argument("--videos", type=_positive(int), default=200, help="catalogue size")
    p.add_argument("--viewers", type=_positive(int), default=2000, help="audience size")
    p.add_argument(
        "--batch-window-ms",
        type=_positive(int),
        default=1500,
        help="a beacon carries a session's events within this client time (tracker: 1500)",
    )
    p.add_argument(
        "--max-batch", type=_positive(int), default=500, help="most events in one request"
    )
    p.add_argument("--connections", type=_positive(int), default=32, help="concurrent requests")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("forget", help="erase a viewer from every table, Redis key and stream entry")
    p.add_argument("viewer_id", help="the viewer id, as the events carry it")
    p.set_defaults(func=cmd_forget)
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        check_urls(settings)
        logs.configure(settings.log_format, settings.log_level)
        code = int(args.func(settings, args))
    except ConfigError as exc:
        print(f"vidpulse: configuration error: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except CommandError as exc:
        print(f"vidpulse: {exc}", file=sys.stderr)
        code = EXIT_FAILURE
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


def check_urls(settings: Settings) -> None:
    """A malformed service URL is a configuration error (exit 2), not a traceback later."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        redis.ConnectionPool.from_url(
            cluster_url(settings.redis_url) or settings.redis_url
        )  # parses only, connects lazily
    except ValueError as exc:
        raise ConfigError(f"REDIS_URL: {exc}") from None
    try:
        conninfo_to_dict(settings.database_url)
    except psycopg.Error as exc:
        raise ConfigError(f"DATABASE_URL: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
