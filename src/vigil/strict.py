"""Strict input: documents that refuse unknown keys, naming the key and the likely intended one.

Every body, YAML file and setting Vigil reads is checked this way, so a typo in a safety field
(``aproval_required: true``) is an error instead of a silently ignored key::

    unknown field 'aproval_required' (did you mean 'approval_required'?)

:func:`unknown_field` writes that message (the suggestion comes from
:func:`difflib.get_close_matches`); :class:`StrictModel` is the base of every wire model
that refuses unknown keys, and rewrites pydantic's ``extra_forbidden`` errors with it, keeping
each error's location (``policies[0].aproval_required``).
"""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ValidatorFunctionWrapHandler

REQUEST_HEADER = "X-Vigil-Request"
"""The header Vigil's own clients send with every request (``X-Vigil-Request: 1``): the API
refuses a state-changing request that has neither a JSON body nor a custom header, which no
other web page can make a browser send without asking (a CORS preflight)."""
CLIENT_HEADERS = {REQUEST_HEADER: "1"}

UNKNOWN_FIELD = "extra_forbidden"
"""The error type of an unknown key (pydantic's own)."""


def suggestion(name: str, known: Iterable[str], *, prefix: str = "") -> str | None:
    """The known name ``name`` most likely misspells, if one is close enough; compared
    without a ``prefix`` they all share (which would make any two names look alike)."""
    short = {item.removeprefix(prefix): item for item in known}
    matches = get_close_matches(name.removeprefix(prefix), list(short), n=1, cutoff=0.6)
    return short[matches[0]] if matches else None


def unknown_field(name: str, known: Iterable[str], *, kind: str = "field", prefix: str = "") -> str:
    """``unknown field 'name'``, with ``(did you mean 'x'?)`` when a known name is close."""
    close = suggestion(name, known, prefix=prefix)
    hint = f" (did you mean {close!r}?)" if close is not None else ""
    return f"unknown {kind} {name!r}{hint}"


def field_path(loc: Iterable[int | str]) -> str:
    """Where in a document an error is: ``('policies', 3, 'condition')`` →
    ``policies[3].condition``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def input_names(model: type[BaseModel]) -> list[str]:
    """The keys ``model`` accepts in a document (a field's alias where it has one)."""
    return [info.alias or name for name, info in model.model_fields.items()]


class StrictModel(BaseModel):
    """A wire model that refuses unknown keys; each is reported with :func:`unknown_field`."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="wrap")
    @classmethod
    def _name_unknown_keys(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            if not any(e["type"] == UNKNOWN_FIELD and len(e["loc"]) == 1 for e in errors):
                raise
            known = input_names(cls)
            raise ValidationError.from_exception_data(
                exc.title, [_restated(e, known) for e in errors]
            ) from None


def _restated(error: Any, known: list[str]) -> InitErrorDetails:
    """``error`` as it was (type, location and message), its message rewritten when it is
    an unknown key of this model (a location of one part: deeper ones are a nested model's,
    which has already named them)."""
    loc = tuple(error["loc"])
    message = str(error["msg"])
    if error["type"] == UNKNOWN_FIELD and len(loc) == 1:
        message = unknown_field(str(loc[0]), known)
    return InitErrorDetails(
        type=PydanticCustomError(error["type"], message),
        loc=loc,
        input=error.get("input"),
    )
