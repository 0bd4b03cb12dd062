"""Log in, users, API tokens, the audit log."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from dmd.auth.passwords import MAX_LENGTH as PW_MAX
from dmd.models import ApiToken, User

__all__ = [
    "AuditOut",
    "AuditQuery",
    "HealthOut",
    "LoginIn",
    "LoginOut",
    "MeOut",
    "PasswordChangeIn",
    "SetupIn",
    "TokenCreateIn",
    "TokenCreatedOut",
    "TokenOut",
    "UserCreateIn",
    "UserOut",
    "UserPatchIn",
]

from dmd.schemas.base import MAX_ID, Email, In, Name, Out, PageQuery, Password, Quota, Role, Username

# --- auth ---------------------------------------------------------------------------

class LoginIn(In):
    email: Email
    password: Annotated[str, StringConstraints(min_length=1, max_length=PW_MAX)]


class SetupIn(In):
    token: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    email: Email
    password: Password
    username: Username | None = None


class PasswordChangeIn(In):
    current_password: Annotated[str, StringConstraints(min_length=1, max_length=PW_MAX)]
    new_password: Password
    sign_out_everywhere: bool = Field(
        True, description="Also revoke every API token of yours (the calling one too) and end every "
                          "other session; your other sessions end in any case. Default true.")


class UserOut(Out):
    id: int
    email: str
    username: str
    role: Role
    disabled: bool
    instance_limit: int | None = Field(description="null: no limit")
    node_limit: int | None = Field(description="null: no limit")
    gpu_limit: int | None = Field(description="null: no limit")
    port_map_limit: int | None = Field(description="Port maps held at once; null: no limit")
    log_follow_limit: int | None = Field(description="Log streams followed at once; null: no limit")
    transfer_limit: int | None = Field(description="Pulls and imports in flight at once; null: no limit")
    created_at: dt.datetime
    updated_at: dt.datetime
    last_login_at: dt.datetime | None

    @classmethod
    def of(cls, u: User) -> UserOut:
        return cls.model_validate(u)


class LoginOut(BaseModel):
    user: UserOut
    csrf_token: str = Field(description="Send as X-CSRF-Token on cookie-authenticated writes")


class MeOut(UserOut):
    auth: Literal["session", "token"]


class HealthOut(BaseModel):
    status: Literal["ok"]
    # Details for administrators only: anonymous callers and plain users learn that dmd is up.
    version: str | None = Field(None, description="admins only")
    database: str | None = Field(None, description="admins only")
    sessions: str | None = Field(None, description="admins only")


# --- users --------------------------------------------------------------------------

class UserCreateIn(In):
    email: Email
    password: Password
    role: Role = "user"
    username: Username | None = None
    instance_limit: Quota | None = None
    node_limit: Quota | None = Field(None, description="Not given: 0 for plain users (they create nodes only "
                                     "when an administrator allows it), no limit for admins; null: no limit")
    gpu_limit: Quota | None = None
    port_map_limit: Quota | None = Field(None, description="Not given: 20; null: no limit")
    log_follow_limit: Quota | None = Field(None, description="Not given: 4; null: no limit")
    transfer_limit: Quota | None = Field(None, description="Not given: 2; null: no limit")


class UserPatchIn(In):
    """Only the fields sent are changed; a quota set to null means no limit."""

    email: Email | None = None
    username: Username | None = None
    role: Role | None = None
    disabled: bool | None = None
    password: Password | None = Field(None, description="Set a new password (ends their sessions)")
    instance_limit: Quota | None = None
    node_limit: Quota | None = None
    gpu_limit: Quota | None = None
    port_map_limit: Quota | None = None
    log_follow_limit: Quota | None = None
    transfer_limit: Quota | None = None


# --- tokens -------------------------------------------------------------------------

class TokenCreateIn(In):
    name: Name
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = None


class TokenOut(Out):
    id: int
    name: str
    prefix: str = Field(description="The first characters, to tell tokens apart")
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None

    @classmethod
    def of(cls, t: ApiToken) -> TokenOut:
        return cls.model_validate(t)


class TokenCreatedOut(TokenOut):
    token: str = Field(description="The secret itself. It is shown only this once.")


# --- audit --------------------------------------------------------------------------

class AuditOut(BaseModel):
    id: int
    at: dt.datetime
    actor_id: int | None
    actor: str
    action: str
    target_type: str | None
    target_id: str | None
    ip: str | None
    detail: dict[str, Any]


class AuditQuery(PageQuery):
    action: Annotated[str, StringConstraints(max_length=64, pattern=r"^[a-z_.]+$")] | None = None
    actor_id: int | None = Field(None, ge=1, le=MAX_ID)
    target_type: Annotated[str, StringConstraints(max_length=32, pattern=r"^[a-z_]+$")] | None = None
    target_id: Annotated[str, StringConstraints(max_length=64)] | None = None
