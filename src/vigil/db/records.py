"""Frozen records from rows: each store names its record's fields, and a row fills them."""

from __future__ import annotations

from dataclasses import fields
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Row

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")


def record_of(cls: type[R], row: Row[Any]) -> R:
    """A ``cls`` (a dataclass) from the row's columns of its fields' names.

    Columns the record does not name are left out, so a column added to a table changes no
    record until its store names it; a field the row lacks raises :class:`KeyError`.
    """
    mapping = row._mapping
    return cls(**{name: mapping[name] for name in _names(cls)})


@cache
def _names(cls: type[DataclassInstance]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def fields_of(record: DataclassInstance, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The record's fields (``names``, else all of them, in order) as a dict, values as
    they are (unlike :func:`dataclasses.asdict`, nothing is copied)."""
    return {name: getattr(record, name) for name in names or _names(type(record))}
