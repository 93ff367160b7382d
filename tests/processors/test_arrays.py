"""Array parameters sent as literals (processors/arrays.py) read back as the values sent."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import hypothesis
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors import arrays

# PostgreSQL text cannot hold NUL, nor UTF-8 a lone surrogate (what arrives is decoded
# UTF-8); everything else can be in an id, a user agent or a referrer.
_TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12)
_WORDS = st.sampled_from(["", "NULL", "null", '"', "\\", "{}", "a,b", " x ", '\\"', "ü"])
_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "text": st.one_of(_TEXT, _WORDS),
    "bigint": st.integers(-(2**63), 2**63 - 1),
    "integer": st.integers(-(2**31), 2**31 - 1),
    "numeric": st.one_of(
        st.integers(-(10**40), 10**40),
        st.decimals(allow_nan=False, allow_infinity=False, places=3),
    ),
    "boolean": st.booleans(),
}


@pytest.fixture(scope="module")
def conn(database_url: str) -> Any:
    with psycopg.connect(database_url, autocommit=True) as c:
        yield c


@pytest.mark.parametrize("type", sorted(_VALUES))
@hypothesis.settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_literal_reads_back_as_the_values(conn: Any, type: str, data: st.DataObject) -> None:
    values = data.draw(st.lists(st.one_of(st.none(), _VALUES[type]), max_size=8))
    (back,) = conn.execute(f"SELECT %t::{type}[]", [arrays.literal(values, type)]).fetchone()
    assert back == values
    if type == "numeric":  # the scale too: 1.500 stays 1.500
        scales = [None if v is None else Decimal(v).as_tuple().exponent for v in values]
        assert [None if v is None else v.as_tuple().exponent for v in back] == scales


def test_quoted_words_stay_text(conn: Any) -> None:
    values = ["NULL", "", '{"a",b}', "back\\slash", None, "tab\tend"]
    literal = arrays.literal(values, "text")
    assert conn.execute("SELECT %t::text[]", [literal]).fetchone()[0] == values


def test_unnest_of_several_columns(conn: Any) -> None:
    # How the processors use them: one array per column, some literal and some binary.
    types = ("text", "bigint", "float8", "boolean")
    columns = [["a", "b"], [1, None], [0.1, 2.5], [True, False]]
    statement = f"SELECT * FROM unnest({', '.join(map(arrays.placeholder, types))})"
    rows = conn.execute(statement, arrays.params(columns, types)).fetchall()
    assert rows == [("a", 1, 0.1, True), ("b", None, 2.5, False)]
    assert arrays.placeholder("float8") == "%b::float8[]"  # floats go in binary
