"""HTTP helpers every route of the dashboard shares: JSON and CSV answers, errors."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response


class JSONResponse(Response):
    """JSON by orjson (dates as ISO 8601, decimals as numbers)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return encode(content)


def encode(value: Any) -> bytes:
    """JSON bytes (decimals as numbers, dates ISO 8601)."""
    return orjson.dumps(value, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class ApiError(Exception):
    """A request the API refuses; becomes `{"error": ...}` with `status`."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


def bad_param(name: str, problem: str) -> ApiError:
    """400 naming the query parameter at fault."""
    return ApiError(400, f"parameter {name!r}: {problem}")


def wants_csv(request: Request) -> bool:
    """`?format=csv`, or an Accept header preferring text/csv."""
    fmt = request.query_params.get("format")
    if fmt is not None:
        if fmt not in ("csv", "json"):
            raise bad_param("format", "must be csv or json")
        return fmt == "csv"
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept.split("text/csv")[0]


def csv_response(rows: Iterable[Mapping[str, Any]], columns: list[str], filename: str) -> Response:
    """Rows as CSV with a header line (RFC 4180 quoting by the csv module)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _cell(row.get(c)) for c in columns})
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        # A cell a spreadsheet would run as a formula is quoted as text.
        return "'" + value
    return value
