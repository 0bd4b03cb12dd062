"""SSH public keys."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

__all__ = [
    "SshKeyCreateIn",
    "SshKeyCreatedOut",
    "SshKeyOut",
    "SshKeyPatchIn",
    "SshKeyQuery",
]

from dmd.schemas.base import MAX_ID, In, Name, PageQuery

# --- SSH keys -----------------------------------------------------------------------

class SshKeyCreateIn(In):
    name: Name | None = Field(None, description="Omit to use the key's comment")
    public_key: Annotated[str, StringConstraints(min_length=1, max_length=65536)] = Field(
        description="One public key: an OpenSSH line ('ssh-ed25519 AAAA… comment', as in a .pub file) or an "
        "RFC 4716 block. Types: ed25519, ecdsa, rsa of at least 2048 bits, sk-ssh-ed25519 and sk-ecdsa. "
        "Options before the key (no-pty, command=…) are dropped: DM writes its own authorized_keys.")


class SshKeyPatchIn(In):
    name: Name


class SshKeyOut(BaseModel):
    id: int
    user_id: int
    name: str
    type: str = Field(description="The key's algorithm, e.g. ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa")
    bits: int
    fingerprint: str = Field(description="As `ssh-keygen -l` prints it: SHA256:…")
    comment: str
    public_key: str = Field(description="The canonical line DM puts into authorized_keys (no options)")
    created_at: dt.datetime
    updated_at: dt.datetime


class SshKeyCreatedOut(SshKeyOut):
    options_removed: list[str] = Field(
        description="Names of the options that preceded the key and were dropped (empty when none)")


class SshKeyQuery(PageQuery):
    user_id: int | None = Field(None, ge=1, le=MAX_ID, description="Administrators: list this user's keys")
