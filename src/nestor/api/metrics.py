"""GET /metrics: the host, its VMs and every nested level's VMs in Prometheus's text format.

Read at each scrape (a custom collector of prometheus_client; nothing is kept between scrapes but
the operations' counts and durations, api/runtime.py): the VMs of this home (state, vCPUs,
startup, assigned and demanded memory, the balloon, nesting, whether a hypervisor runs inside),
then the tree (service/guests.py) for the VMs of each nested level, labelled with their path
(`l1/l2`) and level (1 = a VM of this host). Behind the API's own authentication (the bearer
token over TCP; the socket's permissions on the unix socket).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import NestorError
from ..model import VMState, parse_size
from ..service.types import TreeNode, VMInfo
from .runtime import DURATION_BUCKETS

if TYPE_CHECKING:
    from .runtime import Runtime
    from .table import Settings

TREE_TIMEOUT = 10.0  # seconds per nested level (a scrape's usual timeout is 10 s)
STATES = [state.value for state in VMState]
VM_LABELS = ["vm", "level"]


class Collector:
    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings, self.runtime = settings, runtime

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        def gauge(name: str, doc: str, labels: list[str] | None = None) -> Any:
            return GaugeMetricFamily(f"nestor_{name}", doc, labels=VM_LABELS if labels is None else labels)

        state = gauge("vm_state", "1 for the VM's state, 0 for the others", [*VM_LABELS, "state"])
        vcpus = gauge("vm_vcpus", "virtual processors")
        startup = gauge("vm_memory_startup_bytes", "startup memory")
        assigned = gauge("vm_memory_assigned_bytes", "memory the guest has now (QEMU's balloon 'actual'), running VMs")
        demand = gauge("vm_memory_demand_bytes", "memory the guest uses (its balloon statistics), running VMs")
        balloon = gauge("vm_balloon_bytes", "memory the balloon holds back: QEMU's room minus assigned, running VMs")
        nested = gauge("vm_nested", "1 if virtualization extensions are exposed to the guest")
        hypervisor = gauge("vm_hypervisor_running", "1 while a hypervisor runs inside the guest (R7), where observed")
        reachable = gauge("level_reachable", "1 if the nestor inside a running nested VM answered the tree")
        level_vms = gauge("level_vms", "VMs on a level ('/' is this host; 'l1' the nestor inside l1)", ["host", "level"])
        blocked = gauge("host_nesting_blocked", "1 while this host's policy blocks nesting (nestor host set --nesting)", [])

        with self.settings.service() as s:
            infos = [self._detail(s, info) for info in s.vm_list()]
            policy = s.host_policy()
            tree = s.tree(timeout=TREE_TIMEOUT) if any(i.nested and i.state is VMState.RUNNING for i in infos) else None
        blocked.add_metric([], 1 if policy.nesting == "block" else 0)
        level_vms.add_metric(["/", "0"], len(infos))
        for info in infos:
            labels = [info.name, "1"]
            for value in STATES:
                state.add_metric([*labels, value], 1 if info.state.value == value else 0)
            vcpus.add_metric(labels, info.vcpus)
            startup.add_metric(labels, info.memory)
            nested.add_metric(labels, int(info.nested))
            if info.memory_assigned is not None:
                assigned.add_metric(labels, info.memory_assigned)
                if info.memory_room is not None:
                    balloon.add_metric(labels, max(0, info.memory_room - info.memory_assigned))
            if info.memory_demand is not None:
                demand.add_metric(labels, info.memory_demand)
            if info.hypervisor_running is not None:
                hypervisor.add_metric(labels, int(info.hypervisor_running))
        for node in tree.vms if tree is not None else []:
            self._level(node, node.name, state, vcpus, startup, nested, hypervisor, reachable, level_vms)
        yield from (state, vcpus, startup, assigned, demand, balloon, nested, hypervisor, reachable, level_vms, blocked)

        counts, hist = self.runtime.operations.stats.snapshot()
        ops = CounterMetricFamily("nestor_operations", "ended API operations (long work) by kind and status",
                                  labels=["operation", "status"])
        for (kind, status), n in sorted(counts.items()):
            ops.add_metric([kind, status], n)
        yield ops
        durations = HistogramMetricFamily("nestor_operation_duration_seconds", "API operations' time from submission to end",
                                          labels=["operation"])
        for kind, (cumulative, total, count) in sorted(hist.items()):
            buckets = [(_le(bound), float(n)) for bound, n in zip(DURATION_BUCKETS, cumulative, strict=True)]
            durations.add_metric([kind], [*buckets, ("+Inf", float(count))], total)
        yield durations

    @staticmethod
    def _detail(s: Any, info: VMInfo) -> VMInfo:
        """A running VM of this machine in detail (assigned and demanded memory, R7); as listed if that fails."""
        if info.state is not VMState.RUNNING or info.host is not None:
            return info
        try:
            detailed: VMInfo = s.vm_show(info.name)
            return detailed
        except NestorError:
            return info

    def _level(self, node: TreeNode, path: str, state: Any, vcpus: Any, startup: Any, nested: Any, hypervisor: Any,
               reachable: Any, level_vms: Any) -> None:
        """A nested VM's own metrics are this level's (`node`, the L1); its children are the next level's."""
        if node.reachable is not None:
            reachable.add_metric([path, str(node.level)], int(node.reachable))
        if not node.reachable:
            return
        level_vms.add_metric([path, str(node.level)], len(node.children))
        for child in node.children:
            child_path = f"{path}/{child.name}"
            labels = [child_path, str(child.level)]
            for value in STATES:
                state.add_metric([*labels, value], 1 if child.state == value else 0)
            vcpus.add_metric(labels, child.vcpus)
            try:
                startup.add_metric(labels, parse_size(child.memory))
            except NestorError:
                pass  # a size the guest wrote that is not one: left out
            nested.add_metric(labels, int(child.nested))
            if child.hypervisor_running is not None:
                hypervisor.add_metric(labels, int(child.hypervisor_running))
            self._level(child, child_path, state, vcpus, startup, nested, hypervisor, reachable, level_vms)


def _le(bound: float) -> str:
    return str(float(bound))


def render(settings: Settings, runtime: Runtime) -> tuple[bytes, str]:
    """The exposition (bytes) and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(settings, runtime))
    return generate_latest(registry), CONTENT_TYPE_LATEST
