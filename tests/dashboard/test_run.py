"""`vidpulse run` starts the dashboard with a token made for the run, and says so."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import httpx2

from tests.commands import interrupt, running_vidpulse, settings_env, start_vidpulse, wait_for
from vidpulse.devservices import free_port
from vidpulse.settings import Settings


def _status(url: str, headers: dict[str, str]) -> int | None:
    try:
        return httpx2.get(url, headers=headers, timeout=2).status_code
    except httpx2.HTTPError:
        return None


def test_run_prints_the_dashboard_url_and_a_working_token(
    settings: Settings, tmp_path: Path
) -> None:
    """Without VIDPULSE_ADMIN_TOKENS, run makes a token, prints it, and the API takes it."""
    port, dash_port = free_port(), free_port()
    env = settings_env(settings, VIDPULSE_DASHBOARD_PORT=str(dash_port))
    env.pop("VIDPULSE_ADMIN_TOKENS", None)
    log_path = tmp_path / "run.log"
    with (
        log_path.open("wb") as log,
        running_vidpulse("run", "--port", str(port), env=env, log=log) as proc,
    ):
        url = wait_for(
            lambda: re.search(r"dashboard: (http\S+) ", log_path.read_text()), 60, "its URL"
        ).group(1)
        token = wait_for(
            lambda: re.search(r"dashboard: sign in .* with (\S+)", log_path.read_text()),
            60,
            "the token",
        ).group(1)
        assert url == f"http://127.0.0.1:{dash_port}/"
        assert len(token) >= 32
        api = f"{url}api/v1/overview"
        good = {"Authorization": f"Bearer {token}"}
        assert wait_for(lambda: _status(api, good), 60, "the dashboard") == 200
        assert _status(api, {"Authorization": "Bearer " + "x" * 40}) == 401
        code = interrupt(proc)
    output = log_path.read_text(errors="replace")
    assert code == 0, output
    assert "Traceback" not in output, output


def test_dashboard_takes_the_next_free_port_when_told_to(
    settings: Settings, tmp_path: Path
) -> None:
    """With --port-tries, a taken port moves the dashboard to the next one, which it prints."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = settings_env(settings, VIDPULSE_ADMIN_TOKENS="t" * 30)
        log_path = tmp_path / "dashboard.log"
        with log_path.open("wb") as log:
            proc = start_vidpulse(
                "dashboard", "--port", str(port), "--port-tries", "20", env=env, log=log
            )
            try:
                url = wait_for(
                    lambda: re.search(r"dashboard: (http\S+) ", log_path.read_text()), 30, "its URL"
                ).group(1)
                assert url != f"http://127.0.0.1:{port}/"
                api = f"{url}api/v1/overview"
                headers = {"Authorization": "Bearer " + "t" * 30}
                assert wait_for(lambda: _status(api, headers), 30, "the dashboard") == 200
            finally:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=30)
