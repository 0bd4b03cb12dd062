"""Form input: strings from the browser, checked by the API's pydantic schemas (dmd.schemas), and the
problems turned into one translated message for the page."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import pydantic

from dmd import i18n
from dmd.errors import ApiError
from dmd.schemas.base import is_digits

M = TypeVar("M", bound=pydantic.BaseModel)


@dataclasses.dataclass
class FormError(Exception):
    """What to tell the user about a rejected form: a catalogue key, its parameters, the
    field to mark, and the HTTP status of the re-rendered page."""

    status: int
    key: str
    field: str | None = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def view(self, lang: str) -> dict[str, Any]:
        return {"field": self.field, "text": i18n.gettext(lang, self.key, **self.params)}


def validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        first = e.errors(include_url=False)[0]
        loc = str(first["loc"][0]) if first["loc"] else None
        key = f"err.field.{loc}" if loc and i18n.has(f"err.field.{loc}") else "err.invalid"
        raise FormError(422, key, loc) from None


def from_api_error(e: ApiError) -> FormError:
    """A use case's refusal, as a form message (the English text only when nothing fits)."""
    if e.field and i18n.has(f"err.field.{e.field}"):
        return FormError(e.status, f"err.field.{e.field}", e.field)
    if i18n.has(f"err.{e.code}"):
        return FormError(e.status, f"err.{e.code}", e.field, dict(e.extra))
    return FormError(e.status, "err.other", e.field, {"message": e.message})


def quota(value: str | None) -> int | str | None:
    """A quota field: empty means no limit; a number becomes an int; anything else is left
    as the string so that validation names the field."""
    v = (value or "").strip()
    if not v:
        return None
    return int(v) if is_digits(v) and len(v) <= 9 else v


def optional_int(value: str | None) -> int | str | None:
    return quota(value)


def optional_text(value: str | None) -> str | None:
    v = (value or "").strip()
    return v or None


def kept(data: dict[str, str], *names: str) -> dict[str, str]:
    """The user's input to put back into a re-rendered form (never a password)."""
    return {n: data.get(n, "") for n in names if "password" not in n}
