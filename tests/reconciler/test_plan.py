"""The planner on its own: no application, no database, no agent."""

from __future__ import annotations

from agent import protocol as p
from agent.runtime.validate import validate_spec
from dmd.reconciler.features import ApplyPorts, Ports, RoundView
from dmd.reconciler.plan import (
    Ensure,
    InstanceView,
    NodeView,
    Remove,
    SetStatus,
    build_spec,
    plan_containers,
    status_of,
    sweep,
)

NODE = NodeView(3, "gpu1", "abcdef0123456789", {
    "GPU-a": {"vendor": "nvidia", "uuid": "GPU-a", "index": 0},
    "index:1": {"vendor": "amd", "index": 1, "dri_card": "/dev/dri/card1", "dri_render": "/dev/dri/renderD129"},
})


def inst(i: int, desired: str = "running", status: str = "pending", **kw: object) -> InstanceView:
    return InstanceView(id=i, name=f"web{i}", owner_id=5, image="debian:12", desired=desired,  # type: ignore[arg-type]
                        status=status, **kw)  # type: ignore[arg-type]


def container(i: int, state: str = "running", **kw: object) -> p.ContainerInfo:
    return p.ContainerInfo(id=f"c{i}", name=f"dm-abcdef-{i}-web{i}", image="debian:12", state=state,  # type: ignore[arg-type]
                           instance_id=i, node_id=3, managed=True, **kw)  # type: ignore[arg-type]


def test_a_new_instance_is_ensured_and_says_creating_meanwhile() -> None:
    steps = plan_containers(NODE, [inst(1)], {})
    assert steps == [Ensure(1, build_spec(NODE, inst(1)), "running", creating=True)]
    again = plan_containers(NODE, [inst(1, status="error")], {})  # sent before: no "creating"
    assert again == [Ensure(1, build_spec(NODE, inst(1)), "running", creating=False)]


def test_the_agent_is_told_when_dmd_knows_there_is_no_container() -> None:
    # The hello listed every container: one missing is known not to exist, and the agent need not
    # look for it before creating.
    assert [s.fresh for s in plan_containers(NODE, [inst(1)], {}, complete=True)] == [True]
    assert [s.fresh for s in plan_containers(NODE, [inst(1)], {}, complete=False)] == [False]
    stopped = {1: container(1, "exited")}
    assert [s.fresh for s in plan_containers(NODE, [inst(1)], stopped, complete=True)] == [False]


def test_a_container_already_as_wanted_costs_no_request() -> None:
    running = inst(1, status="running", container_id="c1")
    assert plan_containers(NODE, [running], {1: container(1)}) == []
    stopped = inst(2, "stopped", status="stopped", container_id="c2")
    assert plan_containers(NODE, [stopped], {2: container(2, "exited", exit_code=0)}) == []


def test_a_stale_status_is_recorded_without_asking_the_agent() -> None:
    steps = plan_containers(NODE, [inst(1, status="creating")], {1: container(1)})
    assert steps == [SetStatus(1, "running", None, "c1")]
    died = plan_containers(NODE, [inst(2, "stopped", status="running", container_id="c2")],
                           {2: container(2, "exited", exit_code=137)})
    assert died == [SetStatus(2, "stopped", "exited with code 137", "c2")]


def test_a_container_in_the_wrong_state_is_ensured() -> None:
    # Stopped while it should run (the node rebooted): started again.
    steps = plan_containers(NODE, [inst(1, status="running", container_id="c1")], {1: container(1, "exited")})
    assert steps == [Ensure(1, build_spec(NODE, inst(1)), "running")]
    steps = plan_containers(NODE, [inst(2, "stopped", status="running")], {2: container(2)})
    assert steps == [Ensure(2, build_spec(NODE, inst(2, "stopped")), "stopped")]


def test_deleted_instances_are_removed_whatever_their_container() -> None:
    assert plan_containers(NODE, [inst(1, "deleted", status="deleting")], {1: container(1)}) == [Remove(1)]
    assert plan_containers(NODE, [inst(2, "deleted", status="deleting")], {}) == [Remove(2)]


def test_the_spec_carries_the_ledger_s_gpus_by_device_and_the_installation() -> None:
    spec = build_spec(NODE, inst(7, gpu_keys=("GPU-a", "index:1", "GPU-gone"), cpus=2.0, memory_mb=512,
                                 env={"A": "1"}, command=("sleep", "1")))
    assert spec.gpus == [p.GpuRequest("nvidia", uuid="GPU-a", index=0),
                         p.GpuRequest("amd", index=1, dri_card="/dev/dri/card1", dri_render="/dev/dri/renderD129")]
    assert spec.name == "dm-abcdef-7-web7" and spec.node_id == 3 and spec.instance_id == 7
    assert spec.labels == {"dm.owner": "5", "dm.installation": "abcdef0123456789"}
    assert (spec.cpus, spec.memory_mb, spec.env, spec.command, spec.hostname) == (2.0, 512, {"A": "1"},
                                                                                 ["sleep", "1"], "web7")
    validate_spec(spec)  # a spec any driver takes


def test_status_of_containers() -> None:
    assert status_of(container(1)) == ("running", None)
    assert status_of(container(1, "paused")) == ("running", None)
    assert status_of(container(1, "exited", exit_code=0)) == ("stopped", None)
    assert status_of(container(1, "exited", exit_code=2)) == ("stopped", "exited with code 2")
    assert status_of(container(1, "exited", exit_code=137, oom_killed=True)) == ("stopped", "killed: out of memory")
    assert status_of(container(1, "created", error="no such device")) == ("error", "no such device")


def test_ports_are_withdrawn_before_a_container_goes_and_pushed_at_the_end() -> None:
    ports = Ports(applier=None)  # type: ignore[arg-type]  # planning needs no applier
    view = RoundView(NODE, [inst(1), inst(2, "deleted", status="deleting")])
    assert ports.before(view) == [ApplyPorts("instances are being deleted")]
    assert ports.after(view) == [ApplyPorts("end of round")]
    assert ports.before(RoundView(NODE, [inst(1)])) == []


def test_the_sweep_keeps_every_instance_dmd_still_has() -> None:
    assert sweep([inst(1), inst(4, "stopped")]).keep == (1, 4)


def test_every_running_instance_is_told_its_ssh_keys_each_round() -> None:
    from dmd.queries.instance_access import Access
    from dmd.reconciler.features import PushAccess, Ssh

    ssh = Ssh(db=None, hub=None)  # type: ignore[arg-type]  # planning needs neither
    view = RoundView(NODE, [inst(1, status="running"), inst(2, "stopped", status="stopped"),
                            inst(3, status="running"), inst(4, status="running"), inst(5, status="running")],
                     frozenset({1, 3, 4, 5}),
                     {"ssh": {1: Access(True, ["ssh-ed25519 AAAA a"], "ready"),
                              2: Access(True, ["ssh-ed25519 AAAA b"], None),
                              3: Access(False, [], "ready"),  # just turned off: revoke
                              4: Access(False, [], "disabled"),  # off, and the agent said so
                              5: Access(False, [], None)}})  # off from the start: no key was ever written
    assert ssh.after(view) == [PushAccess(1, True, ("ssh-ed25519 AAAA a",)), PushAccess(3, False, ())]
    assert ssh.after(view) == ssh.after(view)  # again next round: a kick refreshes what the page shows


def test_a_gpu_whose_uuid_is_not_its_key_is_named_by_index() -> None:
    """GPUs that repeat a uuid are keyed by index: the spec must not name the shared uuid, which
    the runtime would resolve to every device reporting it."""
    twins = NodeView(3, "gpu1", "abcdef0123456789", {
        "index:0": {"vendor": "nvidia", "uuid": "GPU-same", "index": 0},
        "index:1": {"vendor": "nvidia", "uuid": "GPU-same", "index": 1},
    })
    spec = build_spec(twins, inst(7, gpu_keys=("index:1",)))
    assert spec.gpus == [p.GpuRequest("nvidia", uuid=None, index=1)]
    validate_spec(spec)
