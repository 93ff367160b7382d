"""Array parameters as PostgreSQL array literals, for the processors' set-based statements.

Every statement of a batch sends its rows as arrays (`unnest(...)`), and a batch of
live traffic sends tens of thousands of array elements. psycopg's binary list dumper
handles each element in Python, at 0.25-0.5 µs apiece and 1.3 µs for a numeric;
joining the elements' text forms is one C-level join for text (0.03 µs apiece) and a
`str` per integer or decimal (0.25-0.6 µs). So the columns of the types in LITERAL
travel as one text literal each (`%t::type[]`), the others (floats, whose repr costs
as much as their binary form, timestamps, dates, uuids) in binary (`%b::type[]`).
`placeholder` and `param` give a column's placeholder and its value; `literal` builds
the text.

The text forms read back as the same values: str of an int or a Decimal is exact, and
text elements are double-quoted, with `"` and `\\` escaped, so no value (`NULL`, an
empty string, braces, commas, spaces) can be read as anything else. None is NULL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

_BOOL = {True: "t", False: "f"}

# SQL element type -> the text form of one (non-None) value.
_FORMS: dict[str, Callable[[Any], str]] = {
    "bigint": str,
    "integer": str,
    "smallint": str,
    "numeric": str,
    "boolean": _BOOL.__getitem__,
}
LITERAL = frozenset({*_FORMS, "text"})


def placeholder(type: str) -> str:
    """The placeholder of an array parameter of `type` elements: `%t::type[]` or `%b::type[]`."""
    return f"%t::{type}[]" if type in LITERAL else f"%b::{type}[]"


def param(values: Sequence[Any], type: str) -> Any:
    """The value to pass for `placeholder(type)`: a literal, or the list as it is."""
    return literal(values, type) if type in LITERAL else values


def params(columns: Sequence[Sequence[Any]], types: Sequence[str]) -> list[Any]:
    """`param` of each column, for a statement whose placeholders are `placeholder(types)`."""
    return list(map(param, columns, types))


def literal(values: Sequence[Any], type: str) -> str:
    """A one-dimensional array literal of `values` (None: NULL) of `type` elements."""
    if type == "text":
        return _text(values)
    form = _FORMS[type]
    if None in values:
        return "{" + ",".join("NULL" if v is None else form(v) for v in values) + "}"
    return "{" + ",".join(map(form, values)) + "}"


def _text(values: Sequence[str | None]) -> str:
    if not values:
        return "{}"
    try:
        plain = "".join(values)  # type: ignore[arg-type]
    except TypeError:  # a None among them
        return "{" + ",".join("NULL" if v is None else _quote(v) for v in values) + "}"
    if '"' in plain or "\\" in plain:
        return "{" + ",".join(map(_quote, values)) + "}"  # type: ignore[arg-type]
    return '{"' + '","'.join(values) + '"}'  # type: ignore[arg-type]


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
