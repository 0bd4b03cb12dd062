"""The gateway's host key: ed25519, generated once into the data dir (mode 0600) and reused, so
that clients keep trusting the same key across restarts."""

from __future__ import annotations

import os
from pathlib import Path

import asyncssh

FILE_NAME = "ssh_gateway_host_key"


def load_or_create(data_dir: Path) -> asyncssh.SSHKey:
    """The key in `data_dir`, made on the first start. A file that is not a private key stops
    the start with a clear reason (replacing it would silently change what clients trust)."""
    path = data_dir / FILE_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        key = asyncssh.generate_private_key("ssh-ed25519", comment="dm-ssh-gateway")
        # O_EXCL: two dmd starting on one data dir never write over each other's key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.export_private_key())
        return key
    try:
        return asyncssh.import_private_key(data)
    except (asyncssh.KeyImportError, ValueError):
        raise RuntimeError(f"{path} is not an SSH private key: delete it to generate a new one "
                           "(clients will have to trust the new host key)") from None


def public_line(key: asyncssh.SSHKey) -> str:
    """'ssh-ed25519 AAAA...' (no comment)."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])
