"""A scriptable in-memory runtime driver with the Docker driver's contract, for fast tests.

It passes the same conformance suite as :class:`~agent.runtime.docker.DockerDriver` and adds
hooks a test needs to provoke what a real engine does rarely:

    fake = FakeDriver()
    fake.add_image("debian:12")                              # local images
    fake.add_remote_image("registry.local/app:1")            # what pull can fetch
    fake.register_program(["serve"], program)                # what a command does when run
    fake.fail_next("create", after=True)                     # create, then "lose" the reply
    fake.fail_next("start", times=2, code="unavailable")     # fail the next two starts
    fake.delay_next("stop", 0.5)                             # a slow engine
    fake.exit("dm-7-web", 137, oom=True)                     # the container dies (oom)
    fake.add_container("someone-elses", "debian:12")         # an unmanaged container
    fake.set_capabilities(commit=False)                      # a runtime that cannot commit
    fake.payloads[container_id]                              # the Engine API body DM would send
    fake.calls                                               # [("create", ("dm-7-web",)), ...]
    fake.sessions[-1].resizes                                # the last exec_interactive's terminal sizes

Commands run *programs*: coroutines ``async def program(proc: FakeProcess) -> int`` that write
output and return an exit code (see :mod:`.programs`). Its parts: :mod:`.records` (its state),
:mod:`.engine` (scripting and plumbing), :mod:`.containers`, :mod:`.images` and :mod:`.archive` (files).
"""

from __future__ import annotations

from agent.runtime.fake.archive import ArchiveCalls
from agent.runtime.fake.containers import ContainerCalls
from agent.runtime.fake.engine import CAPABILITIES
from agent.runtime.fake.images import ImageCalls
from agent.runtime.fake.programs import FakeProcess, FakeProgram

__all__ = ["CAPABILITIES", "FakeDriver", "FakeProcess", "FakeProgram"]


class FakeDriver(ContainerCalls, ImageCalls, ArchiveCalls):
    """In-memory :class:`~agent.runtime.driver.RuntimeDriver`; see the module documentation for
    its scripting hooks."""

    name = "fake"
