"""Access into instances: SSH (keys, host keys, a supervised sshd) — see :mod:`agent.access.ssh`."""

from __future__ import annotations

from agent.access.ssh import SshAccess, SshSpec

__all__ = ["SshAccess", "SshSpec"]
