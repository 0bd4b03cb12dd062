"""Access into instances: SSH (keys, host keys, a supervised sshd) — see :mod:`agent.access.ssh`;
streams into instances (:mod:`agent.access.channels`); SSH served by the agent itself for images
without a server (:mod:`agent.access.agentssh`, :mod:`agent.access.sshserver`)."""

from __future__ import annotations

from agent.access.ssh import SshAccess, SshSpec

__all__ = ["SshAccess", "SshSpec"]
