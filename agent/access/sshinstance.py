"""What an SSH connection served by the agent knows of its instance (:mod:`agent.access.sshserver`).

Looked up once per connection: the container, its host pid and root file system
(:class:`~agent.access.inroot.Root`, when the agent can reach it), the accounts of its
``/etc/passwd`` and the groups of its ``/etc/group`` (read inside the root, in a thread), and
its login user (``id -un`` run as the container's configured user; root when that fails).

Public API::

    instance = await open_instance(driver, container)
    instance.user                     # "root", or the container's configured user
    instance.account("root")          # Account(name, uid, gid, home, shell)
    instance.close()                  # blocking (closes a descriptor): from a thread
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass, field

from agent.access import inroot
from agent.access.inroot import Root
from agent.access.sftp import IdNames
from agent.protocol.types import ContainerInfo
from agent.runtime.driver import RuntimeDriver
from agent.runtime.errors import DriverError, UnsupportedError

__all__ = ["Account", "Instance", "open_instance", "parse_groups", "parse_passwd"]

log = logging.getLogger("agent.access.sshd")

EXEC_TIMEOUT_S = 15.0
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}\$?$")


@dataclass(frozen=True, slots=True)
class Account:
    """A login of the container (from its /etc/passwd and /etc/group, or what is known without them)."""

    name: str
    uid: int | None = None
    gid: int | None = None
    home: str = ""
    shell: str = ""
    groups: tuple[int, ...] = ()  # the groups that list it as a member


def parse_groups(text: bytes) -> tuple[dict[int, str], dict[str, tuple[int, ...]]]:
    """``name:x:gid:member,member`` lines: each gid's name, and each member's gids."""
    names: dict[int, str] = {}
    members: dict[str, list[int]] = {}
    for raw in text.decode("utf-8", "replace").splitlines():
        fields = raw.split(":")
        if len(fields) < 3 or not fields[0]:
            continue
        try:
            gid = int(fields[2])
        except ValueError:
            continue
        names.setdefault(gid, fields[0])
        for member in (fields[3].split(",") if len(fields) > 3 else []):
            if member:
                members.setdefault(member, []).append(gid)
    return names, {member: tuple(gids) for member, gids in members.items()}


def parse_passwd(text: bytes, groups: dict[str, tuple[int, ...]] | None = None) -> dict[str, Account]:
    """``name:x:uid:gid:gecos:home:shell`` lines (malformed ones are skipped), each with the groups
    that list it (``groups``, from :func:`parse_groups`)."""
    accounts: dict[str, Account] = {}
    for raw in text.decode("utf-8", "replace").splitlines():
        fields = raw.split(":")
        if len(fields) < 7 or not fields[0] or fields[0] in accounts:
            continue
        try:
            uid, gid = int(fields[2]), int(fields[3])
        except ValueError:
            continue
        accounts[fields[0]] = Account(fields[0], uid, gid, fields[5], fields[6], (groups or {}).get(fields[0], ()))
    return accounts


@dataclass(slots=True)
class Instance:
    """What one connection serves: the container, its root and accounts, its login user."""

    container: ContainerInfo
    pid: int | None
    root: Root | None
    user: str  # the container's configured user's name
    accounts: dict[str, Account] = field(default_factory=dict)
    names: IdNames = field(default_factory=IdNames)

    def account(self, login: str) -> Account:
        """The container's account of ``login`` (root's defaults when /etc/passwd lacks it)."""
        found = self.accounts.get(login)
        if login == "root" and found is None:
            found = Account("root", 0, 0, "/root", "")
        return found or Account(login)

    def close(self) -> None:
        if self.root is not None:
            self.root.close()
            self.root = None


async def open_instance(driver: RuntimeDriver, container: ContainerInfo) -> Instance:
    pid: int | None
    try:
        pid = await driver.host_pid(container.id)
    except UnsupportedError:
        pid = None
    root: Root | None = None
    accounts: dict[str, Account] = {}
    names = IdNames()
    if pid is not None and inroot.available():
        def read_ids() -> tuple[Root, dict[str, Account], IdNames]:
            opened = Root.of_pid(pid)
            passwd = group = b""
            with contextlib.suppress(OSError):
                passwd = opened.read_small(b"/etc/passwd")
            with contextlib.suppress(OSError):
                group = opened.read_small(b"/etc/group")
            group_names, memberships = parse_groups(group)
            found = parse_passwd(passwd, memberships)
            return opened, found, IdNames({a.uid: n for n, a in found.items() if a.uid is not None}, group_names)

        root, accounts, names = await asyncio.to_thread(read_ids)
    user = "root"
    try:
        result = await driver.exec(container.id, ["id", "-un"], timeout=EXEC_TIMEOUT_S)
    except DriverError as exc:
        log.info("instance %s: the login user is not known (%s); root", container.instance_id, exc)
    else:
        name = result.stdout_text.strip()
        if result.exit_code == 0 and _USER_RE.match(name):
            user = name
    return Instance(container, pid, root, user, accounts, names)
