"""Records built from rows take the columns they name, and only those."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, text

from vigil.db.records import record_of


@dataclass(frozen=True, slots=True)
class Pair:
    name: str
    value: int


def test_a_record_takes_the_columns_it_names_and_ignores_the_others() -> None:
    with create_engine("sqlite://").connect() as conn:
        row = conn.execute(text("SELECT 7 AS value, 'cpu' AS name, 'x' AS added_later")).one()
    assert record_of(Pair, row) == Pair(name="cpu", value=7)


def test_a_row_without_a_field_of_the_record_is_refused() -> None:
    with create_engine("sqlite://").connect() as conn:
        row = conn.execute(text("SELECT 'cpu' AS name")).one()
    with pytest.raises(KeyError, match="value"):
        record_of(Pair, row)
