"""The catalogue: PUT one entry, import many from CSV, bad input told precisely."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.commands import run_vidpulse, settings_env
from tests.dashboard.conftest import sql_rows
from vidpulse.settings import Settings


def test_put_creates_then_replaces_an_entry(api: TestClient, db: psycopg.Connection[Any]) -> None:
    """PUT answers 201 for a new video, 200 when it replaces; the row is what was sent."""
    body = {"title": "Intro", "course_id": "c-7", "course_title": "Basics", "duration_s": 321.5}
    first = api.put("/api/v1/videos/intro-01", json=body)
    assert first.status_code == 201
    assert first.json()["title"] == "Intro"
    second = api.put("/api/v1/videos/intro-01", json={"title": "Intro, again", "is_preview": True})
    assert second.status_code == 200
    [row] = sql_rows(db, "SELECT * FROM videos WHERE video_id = 'intro-01'")
    assert row["title"] == "Intro, again"
    assert row["is_preview"] is True
    assert row["course_id"] is None  # PUT replaces the whole entry
    detail = api.get("/api/v1/videos/intro-01")
    assert detail.status_code == 200  # catalogued, not yet watched
    assert detail.json()["summary"]["views"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "title"),
        ({"title": ""}, "title"),
        ({"title": "x" * 501}, "title"),
        ({"title": "t", "duration_s": -1}, "duration_s"),
        ({"title": "t", "duration_s": "long"}, "duration_s"),
        ({"title": "t", "course_id": "has space"}, "course_id"),
        ({"title": "t", "is_preview": "perhaps"}, "is_preview"),
        ({"title": "t", "colour": "red"}, "colour"),
        ({"title": "a\u0000b"}, "title"),
        ({"title": "t", "course_title": "\u0000"}, "course_title"),
        ([], "body"),
    ],
)
def test_put_refuses_an_invalid_entry_with_422_naming_the_field(
    api: TestClient, db: psycopg.Connection[Any], body: Any, field: str
) -> None:
    """An invalid body is 422 JSON naming the field at fault, and nothing is written."""
    response = api.put("/api/v1/videos/v-1", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert field in error or (field == "body" and "input" in error.lower()), error
    assert not sql_rows(db, "SELECT 1 FROM videos")


def test_put_refuses_what_is_not_json_or_too_big(api: TestClient) -> None:
    """Broken JSON is 422; a body over 16 KiB is 413; a malformed id is 400."""
    assert api.put("/api/v1/videos/v-1", content=b"{not json").status_code == 422
    big = api.put("/api/v1/videos/v-1", json={"title": "t", "course_title": "x" * 20000})
    assert big.status_code == 413
    assert "error" in big.json()
    assert api.put("/api/v1/videos/a%20b", json={"title": "t"}).status_code == 400


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalogue.csv"
    path.write_text(text)
    return path


def test_import_upserts_good_rows_and_reports_bad_ones_by_line(
    settings: Settings, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """Good rows land (created or updated); each bad row is named by line and reason."""
    db.execute("INSERT INTO videos (video_id, title) VALUES ('v-2', 'old title')")
    path = _csv(
        tmp_path,
        "video_id,title,course_id,course_title,duration_s,is_preview,extra\n"
        "v-1,First,c-1,Course one,120,false,ignored\n"
        "v-2,Second,c-1,Course one,,yes,\n"
        'bad id,"Third, with comma",,,,,\n'
        "v-4,,,,,,\n"
        "v-5,Fifth,,,-3,,\n"
        '"v-6","Sixth ""quoted""",,,,no,\n'
        "v-7,Seventh,,,,,,,\n"
        "v-8,Nul\x00title,,,,,\n",
    )
    result = run_vidpulse("catalogue", "import", str(path), env=settings_env(settings))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("3 rows imported (2 created, 1 updated), 5 bad rows")
    errors = result.stderr.splitlines()
    assert [e.split(": ", 1)[0] for e in errors] == [f"{path}:{n}" for n in (4, 5, 6, 8, 9)]
    assert "video_id" in errors[0]
    assert "title" in errors[1]
    assert "duration_s" in errors[2]
    assert "more cells" in errors[3]
    assert "NUL" in errors[4]
    rows = {r["video_id"]: r for r in sql_rows(db, "SELECT * FROM videos")}
    assert set(rows) == {"v-1", "v-2", "v-6"}
    assert rows["v-2"]["title"] == "Second"
    assert rows["v-2"]["is_preview"] is True
    assert rows["v-6"]["title"] == 'Sixth "quoted"'
    assert rows["v-1"]["duration_s"] == 120.0


def test_import_refuses_a_missing_file_or_header_with_exit_2(
    settings: Settings, db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """A missing file or a header without video_id/title exits 2 with one line, writing nothing."""
    env = settings_env(settings)
    missing = run_vidpulse("catalogue", "import", str(tmp_path / "nope.csv"), env=env)
    assert missing.returncode == 2
    assert len(missing.stderr.strip().splitlines()) == 1
    headless = _csv(tmp_path, "id,name\nv-1,First\n")
    result = run_vidpulse("catalogue", "import", str(headless), env=env)
    assert result.returncode == 2
    assert "video_id" in result.stderr
    assert "title" in result.stderr
    assert not sql_rows(db, "SELECT 1 FROM videos")
    huge = _csv(tmp_path, "video_id,title\nv-1," + "x" * 200_000 + "\n")
    result = run_vidpulse("catalogue", "import", str(huge), env=env)
    assert result.returncode == 2
    assert "line 2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not sql_rows(db, "SELECT 1 FROM videos")


def test_import_of_only_bad_rows_exits_1(settings: Settings, tmp_path: Path) -> None:
    """Nothing importable in a file with rows: exit 1, the summary says so."""
    path = _csv(tmp_path, "video_id,title\nbad id,x\n")
    result = run_vidpulse("catalogue", "import", str(path), env=settings_env(settings))
    assert result.returncode == 1
    assert "0 rows imported" in result.stdout


def test_dashboard_without_a_token_exits_2(settings: Settings) -> None:
    """`vidpulse dashboard` with no VIDPULSE_ADMIN_TOKENS refuses to start, in one line."""
    result = run_vidpulse("dashboard", env=settings_env(settings))
    assert result.returncode == 2
    assert "VIDPULSE_ADMIN_TOKENS" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_short_token_is_a_configuration_error(settings: Settings) -> None:
    """A token under 24 characters is refused at start (exit 2), naming the variable."""
    env = settings_env(settings, VIDPULSE_ADMIN_TOKENS="long-enough-token-000000000,short")
    result = run_vidpulse("dashboard", env=env)
    assert result.returncode == 2
    assert "VIDPULSE_ADMIN_TOKENS" in result.stderr
