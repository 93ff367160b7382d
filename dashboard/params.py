"""Query parameters of the API, validated: each bad one is a 400 naming it."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from starlette.datastructures import QueryParams

from dashboard.data.videos import SORTS, VideoQuery
from dashboard.responses import ApiError, bad_param

DEFAULT_DAYS = 30
MAX_DAYS = 3660
MAX_LIMIT = 500
_IDENT = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MAX_Q = 128


def today() -> date:
    return datetime.now(UTC).date()


def day_range(params: QueryParams) -> tuple[date, date]:
    """`from`/`to` (UTC days, inclusive); default the last 30 days up to today."""
    day_to = _day(params, "to") or today()
    day_from = _day(params, "from") or day_to - timedelta(days=DEFAULT_DAYS - 1)
    if day_from > day_to:
        raise bad_param("from", f"{day_from} is after 'to' ({day_to})")
    if (day_to - day_from).days >= MAX_DAYS:
        raise bad_param("from", f"the range from..to may span at most {MAX_DAYS} days")
    return day_from, day_to


def _day(params: QueryParams, name: str) -> date | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        if not _DAY.match(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise bad_param(name, "must be a date YYYY-MM-DD") from None


def limit(params: QueryParams, default: int) -> int:
    value = params.get("limit")
    if value is None or value == "":
        return default
    if not (value.isascii() and value.isdigit() and len(value) <= 3) or not (
        1 <= int(value) <= MAX_LIMIT
    ):
        raise bad_param("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return int(value)


def choice(params: QueryParams, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = params.get(name, default)
    if value not in allowed:
        raise bad_param(name, f"must be one of {', '.join(allowed)}")
    return value


def boolean(params: QueryParams, name: str, default: bool) -> bool:
    value = params.get(name)
    if value is None or value == "":
        return default
    lowered = value.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise bad_param(name, "must be true or false")


def ident(params: QueryParams, name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    return path_ident(value, name)


def path_ident(value: str, name: str) -> str:
    """An id (video, viewer, course) as events carry them: 1-128 of [A-Za-z0-9._:-]."""
    if not _IDENT.match(value):
        raise bad_param(name, "must be 1 to 128 characters of A-Z a-z 0-9 . _ : -")
    return value


def text(params: QueryParams, name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if len(value) > _MAX_Q or "\x00" in value:
        raise bad_param(name, f"must be at most {_MAX_Q} characters")
    return value


def known_only(params: QueryParams, allowed: tuple[str, ...]) -> None:
    """Refuse a parameter the endpoint does not know (a typo would silently do nothing)."""
    for name in params:
        if name not in allowed:
            raise ApiError(400, f"unknown parameter {name!r}; known: {', '.join(allowed)}")


def video_query(q: QueryParams, default_limit: int) -> VideoQuery:
    """The parameters of a videos listing, as the API and the videos page take them."""
    return VideoQuery(
        sort=choice(q, "sort", tuple(SORTS), "views"),
        order=choice(q, "order", ("desc", "asc"), "desc"),
        course_id=ident(q, "course_id"),
        include_preview=boolean(q, "include_preview", False),
        q=text(q, "q"),
        limit=limit(q, default_limit),
        cursor=text(q, "cursor"),
    )
