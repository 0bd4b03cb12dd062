"""Rows as the rest of dmd sees them (plain dataclasses, not ORM objects)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class User:
    id: int
    email: str
    username: str
    role: str
    disabled: bool
    instance_limit: int | None
    node_limit: int | None
    gpu_limit: int | None
    auth_version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    last_login_at: dt.datetime | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @classmethod
    def from_row(cls, row: Any) -> User:
        m = row._mapping
        return cls(**{k: m[k] for k in cls.__slots__})  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    user_id: int
    name: str
    prefix: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: Any) -> ApiToken:
        m = row._mapping
        return cls(**{k: m[k] for k in cls.__slots__})  # type: ignore[attr-defined]
