"""Worker threads that touch files as a container's user, not as the agent's root.

SFTP for a login other than root must not read ``/root`` or write ``/etc`` because the agent
happens to run as root. Linux checks file permissions against a thread's *file system* ids:
``setfsuid(2)``/``setfsgid(2)`` and the raw ``setgroups`` system call change them for the
calling thread only (glibc's ``setgroups`` would change every thread of the agent, so it is
not used). Changing the fs uid from 0 also drops the thread's file capabilities
(CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_CHOWN, CAP_FSETID, ...): the kernel
then judges every open, create, chmod as it would for that user.

The threads belong to one SFTP session's executor and never run anything else; a thread
whose ids could not be set fails its executor's every call (closed, not open).

Public API::

    pool = user_executor(uid=1000, gid=1000, groups=(1000, 27))
    await loop.run_in_executor(pool, os.open, ...)     # as uid 1000
    pool.shutdown()
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

__all__ = ["available", "become", "user_executor"]

# (setgroups, setfsuid, setfsgid) by machine.
_CALLS = {"x86_64": (116, 122, 123), "aarch64": (159, 151, 152), "arm64": (159, 151, 152)}.get(platform.machine())
_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_UNCHANGED = 0xFFFFFFFF  # an id setfsuid/setfsgid refuse: they answer with the current one


def available() -> bool:
    """Whether this machine and process can do it (Linux x86_64/aarch64, as root)."""
    return _CALLS is not None and os.geteuid() == 0


def become(uid: int, gid: int, groups: Sequence[int]) -> None:
    """Make the calling thread's file system ids ``uid``/``gid`` and its groups ``groups``."""
    if _CALLS is None:
        raise OSError(errno.ENOSYS, f"file system ids cannot be set on {platform.machine()}")
    setgroups, setfsuid, setfsgid = _CALLS
    wanted = sorted({int(gid), *(int(g) for g in groups)})
    array = (ctypes.c_uint32 * len(wanted))(*wanted)
    if _syscall(ctypes.c_long(setgroups), ctypes.c_size_t(len(wanted)), array) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setgroups: {os.strerror(err)}")
    # The groups and the gid first, the uid last, as a login does.
    for number, value, what in ((setfsgid, gid, "setfsgid"), (setfsuid, uid, "setfsuid")):
        _syscall(ctypes.c_long(number), ctypes.c_uint32(value))
        now = _syscall(ctypes.c_long(number), ctypes.c_uint32(_UNCHANGED))  # reads it back
        if now != value:
            raise OSError(errno.EPERM, f"{what}({value}) did not take (now {now})")


def user_executor(uid: int, gid: int, groups: Sequence[int] = (), *, workers: int = 4) -> ThreadPoolExecutor:
    """Threads that act as ``uid``/``gid`` (see the module documentation)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"dm-fs-{uid}", initializer=become,
                              initargs=(uid, gid, tuple(groups)))
