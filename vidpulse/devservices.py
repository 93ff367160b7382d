"""Local Redis and PostgreSQL for a laptop or a test run, when none is reachable.

Used by `make run` (persistent servers under `.local/`) and by the test suite
(throwaway servers). Order of preference: what REDIS_URL / DATABASE_URL point at,
then containers when a Docker engine answers, then the `redis-server` and
`postgres` binaries of the machine.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import psycopg
import redis

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_DATABASE_URL = "postgresql://postgres@localhost:5432/vidpulse"


class Missing(Exception):
    """Nothing to run a service with; the message says what to install."""


def redis_answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def postgres_answers(url: str) -> bool:
    """True when the server answers (the database itself may not exist yet)."""
    try:
        psycopg.connect(url, connect_timeout=2, dbname="postgres").close()
    except psycopg.Error:
        return False
    return True


def docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


@dataclass
class LocalServer:
    """A server process this module started; `stop()` ends it."""

    url: str
    stop_command: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.stop_command:
            subprocess.run(self.stop_command, capture_output=True, check=False)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_redis(
    data_dir: Path, port: int | None = None, *, persistent: bool = False
) -> LocalServer:
    """Start `redis-server` on 127.0.0.1 (AOF on when persistent)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise Missing(
            "Redis is not reachable and redis-server is not installed: "
            "install it (apt-get install redis-server) or set REDIS_URL"
        )
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--daemonize",
        "no",
        "--logfile",
        str(data_dir / "redis.log"),
    ]
    args += ["--appendonly", "yes"] if persistent else ["--appendonly", "no"]
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=persistent
    )
    url = f"redis://127.0.0.1:{port}/0"
    _wait(lambda: redis_answers(url), f"redis-server on port {port}")
    return LocalServer(url=url, process=proc)


@dataclass
class LocalCluster:
    """A Redis Cluster of local `redis-server` processes; `stop()` ends them all."""

    nodes: dict[int, subprocess.Popen[bytes]]  # by port
    data_dir: Path
    commands: dict[int, list[str]] = field(default_factory=dict)  # by port

    @property
    def url(self) -> str:
        """`redis+cluster://` of the first node (any node would do)."""
        return f"redis+cluster://127.0.0.1:{min(self.nodes)}"

    def kill(self, port: int) -> None:
        """Kill one node outright (SIGKILL), as a crash would."""
        process = self.nodes[port]
        process.kill()
        process.wait(10)

    def info(self, port: int) -> dict[str, Any]:
        """INFO replication of one node."""
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        try:
            return dict(client.info("replication"))
        finally:
            client.close()

    def replicas_of(self, port: int) -> list[int]:
        """The ports of a master's replicas."""
        info = self.info(port)
        return [int(v["port"]) for k, v in info.items() if k.startswith("slave") and "port" in v]

    def restart(self, port: int) -> None:
        """Start a killed node again, as a supervisor would: it rejoins the cluster from
        its nodes.conf (a master that was failed over comes back as a replica)."""
        self.nodes[port] = subprocess.Popen(
            self.commands[port], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait(lambda: redis_answers(f"redis://127.0.0.1:{port}/0"), f"node {port}")

    def stop(self) -> None:
        for process in self.nodes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.nodes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def start_redis_cluster(
    data_dir: Path, *, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000
) -> LocalCluster:
    """Start masters * (1 + replicas) `redis-server --cluster-enabled yes` nodes on free
    ports of 127.0.0.1 and join them with `redis-cli --cluster create`.

    A small `node_timeout_ms` makes a replica take over a dead master within seconds.
    """
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise Missing(
            "a local Redis Cluster needs redis-server and redis-cli (Redis 7): "
            "apt-get install redis-server, or brew install redis"
        )
    nodes: dict[int, subprocess.Popen[bytes]] = {}
    cluster = LocalCluster(nodes, data_dir)
    try:
        for _ in range(masters * (1 + replicas)):
            port = free_port()
            node_dir = data_dir / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            options = {
                "bind": "127.0.0.1",
                "port": str(port),
                "dir": str(node_dir),
                "cluster-enabled": "yes",
                "cluster-config-file": "nodes.conf",
                "cluster-port": str(free_port()),
                "cluster-node-timeout": str(node_timeout_ms),
                "save": "",
                "appendonly": "no",
                "daemonize": "no",
                "logfile": str(node_dir / "redis.log"),
            }
            cluster.commands[port] = [
                server,
                *(arg for k, v in options.items() for arg in (f"--{k}", v)),
            ]
            nodes[port] = subprocess.Popen(
                cluster.commands[port],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        for port in nodes:
            _wait(lambda port=port: redis_answers(f"redis://127.0.0.1:{port}/0"), f"node {port}")
        addresses = [f"127.0.0.1:{port}" for port in nodes]
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        _wait(lambda: cluster_ready(cluster, replicas), "the Redis Cluster", timeout=60)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def cluster_ready(cluster: LocalCluster, replicas: int = 0) -> bool:
    """Every live node says the cluster is ok and knows every slot's master, and every
    master has `replicas` replicas in sync."""
    for port, process in cluster.nodes.items():
        if process.poll() is not None:
            continue
        try:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
            info = cast(Any, client).execute_command("CLUSTER", "INFO")
            replication = client.info("replication")
            client.close()
        except (redis.RedisError, OSError):
            return False
        text = info.decode() if isinstance(info, bytes) else str(info)
        if "cluster_state:ok" not in text or "cluster_slots_ok:16384" not in text:
            return False
        if replication.get("role") == "master":
            online = [
                v
                for k, v in replication.items()
                if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
            ]
            if len(online) < replicas:
                return False
    return True


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


def start_postgres(data_dir: Path, port: int | None = None) -> LocalServer:
    """initdb (once) and start a PostgreSQL cluster on 127.0.0.1 with trust auth."""
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise Missing(
            "PostgreSQL is not reachable and its server binaries are not installed: "
            "install them (apt-get install postgresql) or set DATABASE_URL"
        )
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    run_as: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise Missing(
                "running as root and there is no 'postgres' user to run PostgreSQL as"
            ) from None
        shutil.chown(data_dir, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    pgdata = data_dir / "pgdata"
    if not (pgdata / "PG_VERSION").exists():
        subprocess.run(
            [*run_as, initdb, "-D", str(pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
    options = f"-p {port} -k {data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [
            *run_as,
            pg_ctl,
            "-D",
            str(pgdata),
            "-o",
            options,
            "-l",
            str(data_dir / "postgres.log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    _wait(lambda: postgres_answers(url), f"postgres on port {port}")
    return LocalServer(
        url=url, stop_command=[*run_as, pg_ctl, "-D", str(pgdata), "-m", "fast", "-w", "stop"]
    )


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return parts._replace(path=f"/{dbname}").geturl()


def ensure_for_laptop(state_dir: Path) -> dict[str, str]:
    """Make Redis and PostgreSQL reachable for `make run`; return the env to use.

    Uses REDIS_URL / DATABASE_URL (or the defaults) when they answer; else starts
    servers that live on under `state_dir` (ports 16379 and 15432).
    """
    env: dict[str, str] = {}
    redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    database_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    if not (redis_answers(redis_url) and postgres_answers(database_url)) and docker_answers():
        return _compose_services()
    if not redis_answers(redis_url):
        local = "redis://127.0.0.1:16379/0"
        if not redis_answers(local):
            start_redis(state_dir / "redis", 16379, persistent=True)
            print(
                f"started a local redis-server on 127.0.0.1:16379 (data in {state_dir}/redis)",
                file=sys.stderr,
            )
        env["REDIS_URL"] = local
    if not postgres_answers(database_url):
        local = "postgresql://postgres@127.0.0.1:15432/vidpulse"
        if not postgres_answers(local):
            start_postgres(state_dir / "postgres", 15432)
            print(
                f"started a local PostgreSQL on 127.0.0.1:15432 (data in {state_dir}/postgres)",
                file=sys.stderr,
            )
        env["DATABASE_URL"] = local
    return env


def _compose_services() -> dict[str, str]:
    """Start Redis and PostgreSQL from deploy/compose.yaml and wait for them."""
    compose = Path(__file__).resolve().parent.parent / "deploy" / "compose.yaml"
    subprocess.run(
        ["docker", "compose", "-f", str(compose), "up", "-d", "--wait", "redis", "postgres"],
        check=True,
        stdout=sys.stderr,
    )
    env = {
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "DATABASE_URL": "postgresql://postgres:vidpulse@127.0.0.1:5432/vidpulse",
    }
    _wait(lambda: redis_answers(env["REDIS_URL"]), "redis (compose)")
    _wait(lambda: postgres_answers(env["DATABASE_URL"]), "postgres (compose)")
    print("started redis and postgres with docker compose (deploy/compose.yaml)", file=sys.stderr)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description="make Redis and PostgreSQL reachable for vidpulse")
    parser.add_argument("--state-dir", default=".local", type=Path)
    args = parser.parse_args()
    try:
        env = ensure_for_laptop(args.state_dir.resolve())
    except (Missing, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"vidpulse: {exc}", file=sys.stderr)
        sys.exit(1)
    for key, value in env.items():
        print(f"export {key}={value}")


if __name__ == "__main__":
    main()
