"""Running the `vidpulse` console script as a real subprocess with a test's settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from pydantic import SecretStr

from vidpulse.settings import Settings

VIDPULSE = str(Path(sys.executable).with_name("vidpulse"))
_ALIASES = {"redis_url": "REDIS_URL", "database_url": "DATABASE_URL"}


def settings_env(settings: Settings | None = None, **extra: str) -> dict[str, str]:
    """The process environment without any vidpulse setting, plus `settings` and `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VIDPULSE_") and k not in _ALIASES.values()
    }
    if settings is not None:
        for name, value in settings.model_dump().items():
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[_ALIASES.get(name, f"VIDPULSE_{name.upper()}")] = str(value)
    env.update(extra)
    return env


def run_vidpulse(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `vidpulse ARGS` to completion, capturing its output as text."""
    return subprocess.run(
        [VIDPULSE, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def start_vidpulse(*args: str, env: dict[str, str], log: IO[Any]) -> subprocess.Popen[bytes]:
    """Start `vidpulse ARGS` in the background; its output goes to the open file `log`."""
    return subprocess.Popen(
        [VIDPULSE, *args], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )


@contextmanager
def running_vidpulse(
    *args: str, env: dict[str, str], log: IO[Any]
) -> Iterator[subprocess.Popen[bytes]]:
    """`start_vidpulse`, and the process killed on the way out if it is still running."""
    proc = start_vidpulse(*args, env=env, log=log)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def interrupt(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """Ctrl-C: SIGINT to `proc`; its exit code once it has stopped."""
    proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=timeout)


def wait_for(check: Callable[[], Any], deadline_s: float, what: str) -> Any:
    """Poll `check` until it returns something truthy (returned), or fail after the deadline."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")
