"""What each page and endpoint shows, one module per page: plain SQL beside the function
running it, answering plain JSON-able dicts (the API's answers, the pages' context)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row


async def fetch_all(
    conn: AsyncConnection[Any], query: str, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Rows as dicts, with numerics as floats and dates as ISO text (JSON-ready)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query.encode(), params)
        return [plain(row) for row in await cur.fetchall()]


async def fetch_one(
    conn: AsyncConnection[Any], query: str, params: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    rows = await fetch_all(conn, query, params)
    return rows[0] if rows else None


def plain(row: dict[str, Any]) -> dict[str, Any]:
    """A row with JSON-ready values: Decimal -> float, date/datetime -> ISO 8601 text."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, Decimal):
            value = float(value)
        elif isinstance(value, date):
            value = value.isoformat()
        out[key] = value
    return out


def pct(part: float | None, whole: float | None) -> float | None:
    """100·part/whole rounded to 2 decimals; None when the whole is 0 or unknown."""
    if part is None or not whole:
        return None
    return round(100.0 * part / whole, 2)
