"""The node's SSH host key: one ed25519 key, made once, kept beside the agent's configuration.

The agent serves SSH for instances whose image has no SSH server (:mod:`agent.access.sshserver`);
every such instance on a node shows the same host key, the node's. It lives in
``<config folder>/ssh_host_ed25519_key`` (``/etc/dmc/`` by default; mode 0600, written
atomically, never replaced once there) and its public line goes to dmd in the node's facts
(``ssh_host_key``) so that dmd can print known_hosts entries: no user is asked to guess.

An agent without a config file (dmd's in-process local node) gets a key in memory unless the
caller names a path.

Public API::

    key = load_or_create(path)        # blocking (a small file): call it off the loop
    public_line(key)                  # "ssh-ed25519 AAAA... dm-node"
"""

from __future__ import annotations

import contextlib
import os
import tempfile

import asyncssh

__all__ = ["HOST_KEY_NAME", "host_key_path", "load_or_create", "public_line"]

HOST_KEY_NAME = "ssh_host_ed25519_key"
COMMENT = "dm-node"


def host_key_path(config_path: str | None) -> str | None:
    """Where the host key of an agent with this config file lives (None: no config file)."""
    if config_path is None:
        return None
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), HOST_KEY_NAME)


def load_or_create(path: str | None) -> asyncssh.SSHKey:
    """The key at ``path``; made there first when it is missing (None: a key in memory)."""
    if path is None:
        return asyncssh.generate_private_key("ssh-ed25519", comment=COMMENT)
    try:
        return asyncssh.read_private_key(path)
    except FileNotFoundError:
        pass
    key = asyncssh.generate_private_key("ssh-ed25519", comment=COMMENT)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ssh-host-key-", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.export_private_key("openssh"))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # never over a key another agent process wrote meanwhile
        except FileExistsError:
            return asyncssh.read_private_key(path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return key


def public_line(key: asyncssh.SSHKey) -> str:
    """The OpenSSH public key line (``ssh-ed25519 AAAA... dm-node``)."""
    line: bytes = key.export_public_key("openssh")
    return line.decode("ascii").strip()
