"""SSH public keys."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

__all__ = [
    "SshConfigOut",
    "SshConfigQuery",
    "SshGatewayOut",
    "SshKeyCreateIn",
    "SshKeyCreatedOut",
    "SshKeyOut",
    "SshKeyPatchIn",
    "SshKeyQuery",
]

from dmd.schemas.base import MAX_ID, In, Name, PageQuery, QueryIn

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


# --- the SSH gateway ----------------------------------------------------------------------

class SshGatewayOut(BaseModel):
    host: str = Field(description="The gateway's host as clients name it (the host of DM's public URL)")
    port: int
    host_key: str = Field(description="Its public host key, OpenSSH format: 'ssh-ed25519 AAAA…'")
    fingerprint: str = Field(description="As `ssh-keygen -l` prints it: SHA256:…")
    known_hosts: str = Field(description="The known_hosts line that trusts it ('[host]:port ssh-ed25519 AAAA…')")
    username: str = Field(description="Your DM username: the SSH username at the gateway")


class SshConfigQuery(QueryIn):
    known_hosts_path: Annotated[str, StringConstraints(min_length=1, max_length=255)] = Field(
        "~/.ssh/dm_known_hosts", description="The file UserKnownHostsFile names (where you save known_hosts)")


class SshConfigOut(BaseModel):
    config: str = Field(description="Host blocks for ~/.ssh/config: one per instance you may use, through the "
                        "gateway (ProxyJump)")
    known_hosts: str = Field(description="The lines of the file known_hosts_path: the gateway's host key and "
                             "the instances' (their own sshd's and their node agent's)")
    known_hosts_path: str
    instances: int
