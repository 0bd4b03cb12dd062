"""The shapes every schema shares: strict input, output from attributes, pages of results, errors."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from dmd.auth.passwords import MAX_LENGTH as PW_MAX
from dmd.auth.passwords import MIN_LENGTH as PW_MIN

__all__ = [
    "MAX_ID",
    "Email",
    "ErrorBody",
    "ErrorOut",
    "In",
    "Name",
    "Out",
    "Page",
    "PageQuery",
    "Password",
    "QueryIn",
    "Quota",
    "Role",
    "T",
    "Username",
    "is_digits",
    "page_of",
    "parse_id",
]


# Ids are 32-bit integers in every database; PostgreSQL refuses a larger number in a query
# outright, so one is refused here with the field's name.
MAX_ID = 2**31 - 1


def is_digits(value: object) -> bool:
    """ASCII digits only: str.isdigit() also takes '³' (which int() refuses: a 500) and '١'."""
    return isinstance(value, str) and value.isascii() and value.isdigit()


def parse_id(raw: object) -> int | None:
    """An id from a path or a form: ASCII digits in 1..MAX_ID, else None (the caller's 404/422)."""
    if not isinstance(raw, str) or not is_digits(raw) or len(raw) > 10:
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_ID else None


def _id_cursor(value: str) -> str:
    if int(value) > MAX_ID:
        raise ValueError(f"a cursor is at most {MAX_ID}")
    return value


def _printable(v: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in v):
        raise ValueError("must not contain control characters or line breaks")
    return v


class In(BaseModel):
    """Every request body: unknown fields are an error, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


class QueryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


Email = Annotated[str, StringConstraints(min_length=3, max_length=254), AfterValidator(_printable)]
Password = Annotated[str, StringConstraints(min_length=PW_MIN, max_length=PW_MAX)]
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), AfterValidator(_printable)
]
Username = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_printable)]
Quota = Annotated[int, Field(ge=0, le=1_000_000)]
Role = Literal["admin", "user"]

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= to get the next page; null on the last page."
    )


class PageQuery(QueryIn):
    limit: int = Field(50, ge=1, le=200)
    cursor: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,10}$"), AfterValidator(_id_cursor)] | None = None

    @property
    def cursor_id(self) -> int | None:
        return int(self.cursor) if self.cursor else None


def page_of(items: list[Any], query: PageQuery, key: str = "id") -> dict[str, Any]:
    """Items fetched with limit+1: the extra one only says whether there is a next page."""
    more = len(items) > query.limit
    items = items[: query.limit]
    last = items[-1] if items else None
    nxt = None
    if more and last is not None:
        nxt = str(last[key] if isinstance(last, dict) else getattr(last, key))
    return {"items": items, "next_cursor": nxt}


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    error: ErrorBody
