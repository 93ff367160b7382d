"""The catalogue of videos (titles, courses, durations, previews): one upsert, two doors.

`PUT /api/v1/videos/{video_id}` sends one entry as JSON; `vidpulse catalogue import
FILE.csv` sends many. Both validate with `CatalogueEntry` and write with `UPSERT`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import psycopg
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from vidpulse.events import Ident, NoNul
from vidpulse.keys import Keys
from vidpulse.redisclient import sync_client
from vidpulse.settings import Settings

Title = Annotated[
    str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True), NoNul
]


class CatalogueEntry(BaseModel):
    """What the catalogue knows of a video. PUT replaces the whole entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: Title
    course_id: Ident | None = None
    course_title: Annotated[str, StringConstraints(max_length=500), NoNul] | None = None
    duration_s: Annotated[float, Field(gt=0, le=7 * 86400, allow_inf_nan=False)] | None = None
    is_preview: bool = False


UPSERT = """
INSERT INTO videos (video_id, title, course_id, course_title, duration_s, is_preview, updated_at)
VALUES (%(video_id)s, %(title)s, %(course_id)s, %(course_title)s, %(duration_s)s,
        %(is_preview)s, now())
ON CONFLICT (video_id) DO UPDATE
SET title = excluded.title, course_id = excluded.course_id,
    course_title = excluded.course_title, duration_s = excluded.duration_s,
    is_preview = excluded.is_preview, updated_at = excluded.updated_at
RETURNING (xmax = 0) AS created, video_id, title, course_id, course_title, duration_s,
          is_preview, updated_at
"""

CSV_COLUMNS = ("video_id", "title", "course_id", "course_title", "duration_s", "is_preview")
REQUIRED_COLUMNS = ("video_id", "title")
MAX_CSV_ROWS = 1_000_000


def describe(exc: ValidationError) -> str:
    """One line: each failing field and why."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def row_params(video_id: str, entry: CatalogueEntry) -> dict[str, Any]:
    return {"video_id": video_id, **entry.model_dump()}


class BadFile(ValueError):
    """The file is not a CSV the import can read (nothing is written)."""


class MissingColumns(BadFile):
    """The CSV header lacks a required column."""


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


class _IdOnly(BaseModel):
    video_id: Ident


def read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]] | BadRow]:
    """Each data row of a catalogue CSV: (line number, upsert params) or a BadRow.

    Empty cells are "not given". `is_preview` takes true/false/1/0/yes/no.
    Raises MissingColumns when the header lacks video_id or title, BadFile when the
    file is not readable CSV (a NUL byte, a cell over the csv module's size limit).
    """
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        try:
            yield from _rows(reader)
        except csv.Error as exc:
            raise BadFile(f"line {reader.line_num + 1}: {exc}") from None


def _rows(reader: csv.DictReader[str]) -> Iterator[tuple[int, dict[str, Any]] | BadRow]:
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise MissingColumns(f"the header lacks column(s): {', '.join(missing)}")
    for count, record in enumerate(reader, start=1):
        line = reader.line_num
        if count > MAX_CSV_ROWS:
            yield BadRow(line, f"more than {MAX_CSV_ROWS} rows; the rest is not read")
            return
        if None in record:
            yield BadRow(line, "more cells than header columns")
            continue
        values = {k: v for k, v in record.items() if k in CSV_COLUMNS and v not in ("", None)}
        try:
            video_id = _IdOnly(video_id=values.pop("video_id", "")).video_id
            entry = CatalogueEntry.model_validate(values)
        except ValidationError as exc:
            yield BadRow(line, describe(exc))
            continue
        yield line, row_params(video_id, entry)


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    bad: list[BadRow] = field(default_factory=list)


def import_csv(settings: Settings, path: Path) -> ImportReport:
    """Upsert every good row of a catalogue CSV (one transaction); report the bad ones.

    Raises FileNotFoundError, MissingColumns or UnicodeDecodeError before writing anything.
    """
    report = ImportReport()
    good: dict[str, dict[str, Any]] = {}
    for item in read_csv(path):
        if isinstance(item, BadRow):
            report.bad.append(item)
        else:
            good[item[1]["video_id"]] = item[1]  # a later row of the same video wins
    if not good:
        return report
    with psycopg.connect(settings.database_url, connect_timeout=10) as conn, conn.transaction():
        for params in good.values():
            row = conn.execute(UPSERT.encode(), params).fetchone()
            assert row is not None
            if row[0]:
                report.created += 1
            else:
                report.updated += 1
    _bump_versions(settings, list(good))
    return report


def _bump_versions(settings: Settings, video_ids: list[str]) -> None:
    keys = Keys(settings.stream)
    client = sync_client(settings.redis_url, socket_connect_timeout=3)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.incr(keys.cache_version("catalogue"))
        for video_id in video_ids:
            pipe.incr(keys.cache_version(f"video:{video_id}"))
        pipe.execute()
    finally:
        client.close()
