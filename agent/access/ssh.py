"""SSH into instances: DM's keys, host keys and a supervised sshd inside each container.

dmd sends ``instance.access`` ``{"instance_id", "ssh": {"enabled", "keys"}}`` (see
:data:`agent.protocol.INSTANCE_ACCESS`); the reply is ``{"ssh": SshStatus}``. For each instance
the agent remembers the last spec and makes the container match it:

* The login user is the container's configured user (``id -un`` run as that user), root when
  none is configured. DM's keys go to ``/etc/dm/ssh/<user>.keys`` (root-owned, directory 0755,
  file 0644, replaced atomically); the user's own ``~/.ssh/authorized_keys`` is never touched,
  and DM's key files of other users are removed.
* Missing host keys are generated (``ssh-keygen -A``), ``/run/sshd`` is created, and DM's own
  sshd is started when the pid in ``/run/dm-sshd.pid`` is not a live sshd::

      /usr/sbin/sshd -o PidFile=/run/dm-sshd.pid \\
                     -o "AuthorizedKeysFile=.ssh/authorized_keys /etc/dm/ssh/%u.keys"

  sshd reads the key file at every login, so a new key list (empty: revoke all) takes effect
  at once for new logins; sessions already open are left alone.
* ``enabled=false`` removes DM's key files and stops DM's sshd ("disabled").
* No ``/usr/sbin/sshd`` (or no ``/bin/sh``) in the container: "no_server", nothing changes. A
  container that is missing or not running: "not_running"; the spec is applied when it starts.

Nothing the user gave reaches a shell: one constant POSIX sh script runs as root inside the
container (``/bin/sh -c SCRIPT dm-ssh MODE USER``), the keys travel on its stdin, and the user
name (from the container itself, checked against a strict pattern) is a positional argument.

Public API (a feature of the agent, see :mod:`agent.features`)::

    access = SshAccess(driver, workloads._find)      # find(instance_id) -> ContainerInfo | None
    access.register(registry)                        # handles p.InstanceAccess
    reply = await access.handle_access(p.InstanceAccess(7, p.SshRequest(True, [...])))
        # -> p.AccessReply(p.SshStatus(state, user, message, host_keys))
        # bad keys: HandlerError("invalid", ...); runtime failures other than a missing or
        # stopped container: HandlerError(<driver code>, <message>)
    await access.on_container_event(instance_id, action)   # re-applies after "start"/"restart"
    restarted = await access.supervise_once()               # {instance_id: SshStatus} re-applied
    task = asyncio.create_task(access.run_supervisor(30.0)) # supervise_once forever; cancel to stop
    access.forget(instance_id)                              # the instance was deleted
    access.status(instance_id)                              # the last SshStatus, or None
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agent import protocol as p
from agent.features import Feature
from agent.handlers import HandlerError, HandlerRegistry
from agent.protocol.types import ContainerInfo
from agent.runtime.driver import ExecResult, RuntimeDriver
from agent.runtime.errors import ConflictError, DriverError, NotFoundError
from agent.runtime.locks import KeyedLocks

__all__ = ["MAX_KEYS", "MAX_KEY_CHARS", "SCRIPT", "SshAccess", "SshSpec"]

log = logging.getLogger(__name__)

INVALID = "invalid"
MAX_KEYS = 1000
MAX_KEY_CHARS = 16384  # an RSA-16384 key with options fits; sshd itself reads longer lines
EXEC_TIMEOUT_S = 60.0  # ssh-keygen -A makes an RSA key: seconds on a slow machine
SUPERVISE_CONCURRENCY = 8
ROOT_EXEC_USER = "0:0"  # numeric: works even where /etc/passwd has no "root"
# What `id -un` may print for sshd's %u to name a file under /etc/dm/ssh (no "/", no leading dot).
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}\$?$")
_EXEC_FAILED = ("exec failed", "no such file or directory", "executable file not found")

# Exit codes of SCRIPT (126/127 are the runtime's own: the shell could not be started).
_OK = 0
_DEAD = 3  # check mode: DM's sshd is not running
_NO_SERVER = 10
_FAILED = 11

SCRIPT = r"""
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mode=$1
user=$2
sshd=/usr/sbin/sshd
keydir=/etc/dm/ssh
pidfile=/run/dm-sshd.pid

fail() { printf '%s\n' "$*" >&2; exit 11; }
need_sshd() { [ -x "$sshd" ] || { echo "$sshd is not in this container (install openssh-server)" >&2; exit 10; }; }

# Whether the pid in DM's pidfile is a live sshd (after a container restart the pidfile is
# stale and the pid may belong to another program; a zombie is dead too).
alive() {
  pid=
  [ -r "$pidfile" ] || return 1
  read -r pid < "$pidfile" || [ -n "$pid" ] || return 1
  case $pid in ''|*[!0-9]*) return 1 ;; esac
  stat=
  read -r stat < "/proc/$pid/stat" 2>/dev/null || [ -n "$stat" ] || return 1
  comm=${stat#*"("}
  comm=${comm%")"*}
  state=${stat##*") "}
  state=${state%% *}
  [ "$comm" = sshd ] || return 1
  case $state in Z|X|x) return 1 ;; esac
  return 0
}

run_sshd() {
  "$sshd" "$@" -o PidFile=/run/dm-sshd.pid -o "AuthorizedKeysFile=.ssh/authorized_keys /etc/dm/ssh/%u.keys"
}

case $mode in
check)
  alive && exit 0
  need_sshd
  exit 3
  ;;
disable)
  rm -f "$keydir"/*.keys "$keydir"/.*.keys.* 2>/dev/null
  if alive; then kill "$pid" 2>/dev/null; fi
  rm -f "$pidfile"
  exit 0
  ;;
apply) ;;
*) fail "unknown mode $mode" ;;
esac

need_sshd
case $user in ''|.*|*/*) fail "unusable login user name" ;; esac

umask 022
mkdir -p "$keydir" || fail "cannot create $keydir"
chown 0:0 /etc/dm "$keydir" 2>/dev/null
chmod 0755 /etc/dm "$keydir" || fail "cannot set the permissions of $keydir"
keys="$keydir/$user.keys"
tmp="$keydir/.$user.keys.$$"
cat > "$tmp" || { rm -f "$tmp"; fail "cannot write $tmp"; }
chmod 0644 "$tmp" || { rm -f "$tmp"; fail "cannot set the permissions of $tmp"; }
mv -f "$tmp" "$keys" || { rm -f "$tmp"; fail "cannot move the keys into $keys"; }
for f in "$keydir"/*.keys; do
  [ "$f" = "$keys" ] || rm -f "$f"
done

out=$(ssh-keygen -A 2>&1) || fail "ssh-keygen -A failed: $out"
mkdir -p /run/sshd && chmod 0755 /run/sshd || fail "cannot create /run/sshd"

if ! alive; then
  out=$(run_sshd -t 2>&1) || fail "sshd refuses its configuration: $out"
  rm -f "$pidfile"
  out=$(run_sshd 2>&1 < /dev/null) || fail "sshd did not start: $out"
  n=0
  until alive; do
    n=$((n + 1))
    [ "$n" -le 50 ] || fail "sshd exited right after it started (is port 22 taken by another program?)"
    sleep 0.1 2>/dev/null || sleep 1
  done
  echo started
fi

for f in /etc/ssh/ssh_host_*_key.pub; do
  [ -r "$f" ] || continue
  line=$(ssh-keygen -lf "$f" 2>/dev/null) || continue
  printf 'hostkey %s\n' "$line"
  printf 'hostpub %s\n' "$(head -c 16384 "$f")"
done
exit 0
"""


@dataclass(frozen=True, slots=True)
class SshSpec:
    """What dmd asked for one instance."""

    enabled: bool
    keys: tuple[str, ...] = ()

    @classmethod
    def from_request(cls, ssh: p.SshRequest) -> SshSpec:
        """Check dmd's keys (the types are checked already); raises HandlerError("invalid")."""
        enabled, keys = ssh.enabled, ssh.keys if ssh.keys is not None else []
        if len(keys) > MAX_KEYS:
            raise HandlerError(INVALID, f"ssh.keys holds {len(keys)} keys; at most {MAX_KEYS} are accepted")
        for i, key in enumerate(keys):
            if not key.strip():
                raise HandlerError(INVALID, f"ssh.keys[{i}] must be a non-empty string")
            if len(key) > MAX_KEY_CHARS:
                raise HandlerError(INVALID, f"ssh.keys[{i}] is longer than {MAX_KEY_CHARS} characters")
            # One key, one line: a line break would smuggle a second (unvetted) line into the file.
            if any(c in key for c in "\n\r\x00"):
                raise HandlerError(INVALID, f"ssh.keys[{i}] must be one line (no line breaks or NUL)")
        return cls(enabled=enabled, keys=tuple(keys))

    def keys_file(self) -> bytes:
        return "".join(f"{key}\n" for key in self.keys).encode("utf-8")


def _status(
    state: str,
    *,
    user: str | None = None,
    message: str | None = None,
    host_keys: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    return {"state": state, "user": user, "message": message, "host_keys": host_keys or []}


def _text(result: ExecResult) -> str:
    """The failure text of an exec, stderr first, trimmed for a status message."""
    text = (result.stderr_text.strip() or result.stdout_text.strip()).replace("\r", "")
    return text[-2000:]


def _exec_failed(result: ExecResult) -> bool:
    """The runtime could not start the program at all (exit 126/127 with its own message)."""
    if result.exit_code not in (126, 127):
        return False
    text = (result.stdout_text + result.stderr_text).lower()
    return any(marker in text for marker in _EXEC_FAILED)


def _host_keys(stdout: str) -> list[dict[str, str]]:
    """``hostkey 256 SHA256:abc comment (ED25519)`` lines, each followed by ``hostpub TYPE BASE64
    comment`` (the public key itself) -> [{"type", "fingerprint", "key"}]."""
    found: list[dict[str, str]] = []
    for line in stdout.splitlines():
        if line.startswith("hostpub ") and found:
            pub = line.split()[1:3]
            if len(pub) == 2:
                found[-1]["key"] = " ".join(pub)
            continue
        if not line.startswith("hostkey "):
            continue
        fields = line.split()
        if len(fields) < 4:
            continue
        kind = fields[-1]
        if kind.startswith("(") and kind.endswith(")"):
            kind = kind[1:-1]
        found.append({"type": kind, "fingerprint": fields[2]})
    return found


SUPERVISE_S = 15.0  # how soon a dead sshd comes back


class SshAccess(Feature):
    name = "ssh"

    """The ``instance.access`` handler and the sshd supervisor (see the module docstring)."""

    def __init__(
        self,
        driver: RuntimeDriver,
        find: Callable[[int], Awaitable[ContainerInfo | None]],
        *,
        find_all: Callable[[], Awaitable[dict[int, ContainerInfo]]] | None = None,
        exec_timeout_s: float = EXEC_TIMEOUT_S,
    ) -> None:
        self.driver = driver
        self._find = find
        self._find_all = find_all  # one listing per supervision round instead of one per instance
        self._exec_timeout_s = exec_timeout_s
        self._specs: dict[int, SshSpec] = {}
        self._status: dict[int, dict[str, Any]] = {}
        self._users: dict[int, tuple[str, str]] = {}  # instance -> (container id, login user)
        self._locks = KeyedLocks()
        self._reactions: set[asyncio.Task[Any]] = set()  # re-applies after container starts

    # --- the feature's hooks --------------------------------------------------------------
    def register(self, registry: HandlerRegistry) -> None:
        registry.register(p.InstanceAccess, self.handle_access)

    def container_changed(self, instance_id: int | None, action: str) -> None:
        """sshd does not survive a container stop: start it again when the container starts."""
        if instance_id is None or action not in ("start", "restart", "destroy"):
            return
        task = asyncio.get_running_loop().create_task(self.on_container_event(instance_id, action))
        self._reactions.add(task)
        task.add_done_callback(self._reacted)

    def _reacted(self, task: asyncio.Task[Any]) -> None:
        self._reactions.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("SSH after a container event failed: %s", task.exception())

    async def run(self) -> None:
        await self.run_supervisor(SUPERVISE_S)

    async def close(self, *, node_deleted: bool = False) -> None:
        for task in list(self._reactions):
            task.cancel()
        await asyncio.gather(*self._reactions, return_exceptions=True)

    # --- public API -------------------------------------------------------------------
    async def handle_access(self, req: p.InstanceAccess) -> p.AccessReply:
        """INSTANCE_ACCESS: remember the spec, apply it, answer with the SSH status."""
        spec = SshSpec.from_request(req.ssh)
        # Remembered first: a container that is stopped now gets the spec when it starts.
        self._specs[req.instance_id] = spec
        try:
            status = await self._apply(req.instance_id)
        except DriverError as e:
            raise HandlerError(e.code, e.message) from None
        return p.AccessReply(p.codec.decode(p.SshStatus, status))

    async def on_container_event(self, instance_id: int | None, action: str) -> dict[str, Any] | None:
        """A container event: re-apply the remembered spec after "start"/"restart" (sshd does
        not survive a container stop). Returns the new SshStatus, or None when nothing ran.
        Never raises for runtime failures (it runs from the event pump)."""
        if instance_id is None:
            return None
        if action == "destroy":
            self._users.pop(instance_id, None)  # a new container may run as another user
            return None
        if action not in ("start", "restart") or instance_id not in self._specs:
            return None
        try:
            return await self._apply(instance_id)
        except DriverError as e:
            log.warning("SSH for instance %s after %s: %s", instance_id, action, e)
            return None

    async def supervise_once(self) -> dict[int, dict[str, Any]]:
        """Check DM's sshd in every remembered, enabled, running instance; re-apply where it is
        not running. Returns the SshStatus of each instance that was re-applied."""
        gate = asyncio.Semaphore(SUPERVISE_CONCURRENCY)
        done: dict[int, dict[str, Any]] = {}
        listed = await self._find_all() if self._find_all is not None and self._specs else None

        async def one(instance_id: int) -> None:
            async with gate:
                try:
                    status = await self._supervise(instance_id, listed)
                except DriverError as e:
                    log.warning("SSH supervision of instance %s: %s", instance_id, e)
                    return
                if status is not None:
                    done[instance_id] = status

        await asyncio.gather(*(one(i) for i, spec in list(self._specs.items()) if spec.enabled))
        return done

    async def run_supervisor(self, interval_s: float = 30.0) -> None:
        """supervise_once every ``interval_s`` seconds until cancelled."""
        while True:
            try:
                await self.supervise_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # the supervisor must outlive any one bad round
                log.exception("SSH supervision round failed")
            await asyncio.sleep(interval_s)

    def forget(self, instance_id: int) -> None:
        """Stop tracking an instance (it was deleted); nothing in its container changes."""
        self._specs.pop(instance_id, None)
        self._status.pop(instance_id, None)
        self._users.pop(instance_id, None)

    def status(self, instance_id: int) -> dict[str, Any] | None:
        """The last SshStatus reported for an instance."""
        return self._status.get(instance_id)

    def spec(self, instance_id: int) -> SshSpec | None:
        """The last spec dmd gave for an instance."""
        return self._specs.get(instance_id)

    # --- applying ---------------------------------------------------------------------
    async def _apply(self, instance_id: int) -> dict[str, Any]:
        async with self._locks.hold(instance_id):
            spec = self._specs.get(instance_id)  # the newest, read under the lock
            if spec is None:
                return _status("disabled", message="forgotten")
            container = await self._find(instance_id)
            if container is None or container.state != "running":
                # Disabled is what dmd asked for; DM's key file goes when the container starts.
                status = (_status("disabled") if not spec.enabled else
                          _status("not_running", message=None if container else "the instance has no container"))
            else:
                try:
                    status = await self._apply_to(instance_id, container, spec)
                except (ConflictError, NotFoundError):  # stopped or removed under us
                    status = _status("not_running")
            self._record(instance_id, status)
            return status

    async def _supervise(self, instance_id: int, listed: dict[int, ContainerInfo] | None = None
                         ) -> dict[str, Any] | None:
        async with self._locks.hold(instance_id):
            spec = self._specs.get(instance_id)
            if spec is None or not spec.enabled:
                return None
            container = listed.get(instance_id) if listed is not None else await self._find(instance_id)
            if container is None or container.state != "running":
                if container is not None:
                    self._record(instance_id, _status("not_running"))
                return None
            try:
                check = await self._script(container.id, "check", "root", None)
                if check.exit_code == _OK:
                    return None
                if check.exit_code == _NO_SERVER or _exec_failed(check):
                    status = _status("no_server", message=_text(check) or None)
                    self._record(instance_id, status)
                    return None
                status = await self._apply_to(instance_id, container, spec)
            except (ConflictError, NotFoundError):
                return None
            self._record(instance_id, status)
            return status

    async def _apply_to(self, instance_id: int, container: ContainerInfo, spec: SshSpec) -> dict[str, Any]:
        if not spec.enabled:
            result = await self._script(container.id, "disable", "root", None)
            if result.exit_code != _OK and not _exec_failed(result):
                return _status("error", message=f"revoking DM's keys failed: {_text(result)}")
            return _status("disabled")
        user, problem = await self._login_user(instance_id, container.id)
        if user is None:
            return _status("error", message=problem)
        result = await self._script(container.id, "apply", user, spec.keys_file())
        if result.exit_code == _OK:
            return _status("ready", user=user, host_keys=_host_keys(result.stdout_text))
        if result.exit_code == _NO_SERVER or _exec_failed(result):
            return _status("no_server", message=_text(result) or None)
        return _status("error", user=user, message=_text(result) or f"the SSH setup exited with {result.exit_code}")

    async def _login_user(self, instance_id: int, container_id: str) -> tuple[str | None, str]:
        """The container's configured user's name (cached per container), or (None, why)."""
        cached = self._users.get(instance_id)
        if cached is not None and cached[0] == container_id:
            return cached[1], ""
        result = await self.driver.exec(container_id, ["id", "-un"], timeout=self._exec_timeout_s)
        if result.exit_code == 0:
            name = result.stdout_text.strip()
            if not _USER_RE.match(name):
                return None, f"the container's user name {name!r} cannot be used for SSH"
        elif _exec_failed(result) and "unable to find user" not in result.stdout_text.lower():
            # No `id` (nor, likely, a shell): root, as the script's own exec will tell.
            name = "root"
        else:
            return None, f"the container's user has no account name: {_text(result)}"
        self._users[instance_id] = (container_id, name)
        return name, ""

    async def _script(self, container_id: str, mode: str, user: str, stdin: bytes | None) -> ExecResult:
        return await self.driver.exec(
            container_id,
            ["/bin/sh", "-c", SCRIPT, "dm-ssh", mode, user],
            user=ROOT_EXEC_USER,
            stdin=stdin,
            timeout=self._exec_timeout_s,
        )

    def _record(self, instance_id: int, status: dict[str, Any]) -> None:
        if instance_id not in self._specs:
            return  # forgotten while this ran
        before = self._status.get(instance_id)
        self._status[instance_id] = status
        if before is None or before["state"] != status["state"]:
            if status["state"] == "error":
                log.warning("SSH for instance %s: %s", instance_id, status["message"])
            else:
                log.info("SSH for instance %s: %s", instance_id, status["state"])
