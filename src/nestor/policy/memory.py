"""Memory rules (Hyper-V's meaning, DESIGN.md R7 and R12-R14) and the balancer's decision. Pure.

Static memory: the guest has `startup`. Dynamic memory: it starts at `startup` and the balancer
moves it between `minimum` and `maximum`, keeping `buffer` percent of the guest's demand free.

QEMU cannot add RAM to a microvm at runtime, so a VM is started with room to grow: QEMU's -m is
the *room* (dynamic: maximum; static: max(startup, maximum), maximum defaulting to startup) and
the virtio-balloon takes the rest back right after start. Growing past the room needs a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import Conflict, InvalidInput, PolicyError, StateError
from ..model import VMConfig, format_size

MiB = 1 << 20
MIN_SIZE = 32 * MiB  # Hyper-V's minimum for dynamic memory; a Linux guest needs about that
BUFFER_RANGE = (5, 2000)  # percent, as Hyper-V allows
DEFAULT_BUFFER = 20

# The balancer (nestor/balancer.py): one cycle per second, growth at once, shrinking gently.
CYCLE = 1.0  # seconds between cycles
STATS_INTERVAL = 1  # seconds between guest memory reports while the balancer runs
GROW_INTERVAL = 1.0  # at least this long between two balloon changes that grow the guest
SHRINK_INTERVAL = 2.0  # ... and between changes that shrink it
SHRINK_STEP = 25  # percent of the guest's memory given back per change, at most
SHRINK_STEP_MIN = 32 * MiB  # ... but at least this much
HYSTERESIS = 3  # percent of the guest's memory: smaller differences are left alone
HYSTERESIS_MIN = 8 * MiB
SETTLE_TIMEOUT = 10.0  # seconds a balloon change may take before the balancer decides anew
SHRINK_MARGIN = 16 * MiB  # a runtime shrink leaves the guest at least its use plus this


@dataclass(frozen=True)
class MemoryPlan:
    """A VM's memory with the defaults resolved, in bytes."""

    dynamic: bool
    startup: int
    minimum: int
    maximum: int
    buffer: int

    @property
    def room(self) -> int:
        """QEMU's -m: the most the guest can ever have without a restart."""
        return max(self.startup, self.maximum)


def default_minimum(startup: int) -> int:
    return max(MIN_SIZE, startup // 2 // MiB * MiB)


def default_maximum(startup: int) -> int:
    return 2 * startup


def resolve(config: VMConfig) -> MemoryPlan:
    startup = config.memory
    if config.dynamic_memory:
        minimum = config.memory_minimum or min(startup, default_minimum(startup))
        maximum = config.memory_maximum or default_maximum(startup)
    else:
        minimum = startup
        maximum = max(startup, config.memory_maximum or startup)
    return MemoryPlan(config.dynamic_memory, startup, minimum, maximum, config.memory_buffer)


def change(config: VMConfig, startup: int | None = None, dynamic: bool | None = None, minimum: int | None = None,
           maximum: int | None = None, buffer: int | None = None) -> VMConfig:
    """The configuration after `vm set-memory` (not validated yet).

    A static VM's maximum is only room to grow into, so a larger startup raises it."""
    new = replace(
        config,
        memory=config.memory if startup is None else startup,
        dynamic_memory=config.dynamic_memory if dynamic is None else dynamic,
        memory_minimum=config.memory_minimum if minimum is None else minimum,
        memory_maximum=config.memory_maximum if maximum is None else maximum,
        memory_buffer=config.memory_buffer if buffer is None else buffer,
    )
    if not new.dynamic_memory and maximum is None and new.memory_maximum is not None and new.memory_maximum < new.memory:
        new = replace(new, memory_maximum=None)
    return new


def check_size(size: int, what: str, host_total: int, option: str | None = None) -> None:
    """The one memory-size rule (vm new and set-memory): at least MIN_SIZE, whole MiB, within the host."""
    option = option or f"--{what}"
    if size < MIN_SIZE:
        raise InvalidInput(f"{what} memory {format_size(size)} is too small (at least {format_size(MIN_SIZE)})",
                           hint=f"e.g. {option} 256M")
    if size % MiB:
        raise InvalidInput(f"{what} memory {format_size(size)} is not a whole number of MiB",
                           hint=f"e.g. {option} 512M or 2G")
    if host_total and size > host_total:  # a conflict with this host, not a bad request (docs/decisions.md)
        raise Conflict(
            f"{what} memory {format_size(size)} is more than the host has ({host_total >> 20}M)",
            hint="give the VM less memory",
        )


def check_buffer(buffer: int) -> None:
    low, high = BUFFER_RANGE
    if not low <= buffer <= high:
        raise InvalidInput(f"memory buffer {buffer}% is out of range ({low} to {high} %)",
                           hint="the percent of the guest's demand kept free, e.g. --buffer 20")


def validate(config: VMConfig, host_total: int) -> MemoryPlan:
    """minimum <= startup <= maximum, every size within the host, the buffer 5-2000 %."""
    check_size(config.memory, "startup", host_total)
    for value, what in ((config.memory_minimum, "minimum"), (config.memory_maximum, "maximum")):
        if value is not None:
            check_size(value, what, host_total)
    check_buffer(config.memory_buffer)
    plan = resolve(config)
    if config.memory_minimum is not None and config.memory_minimum > config.memory:
        raise InvalidInput(
            f"minimum memory {format_size(config.memory_minimum)} is more than startup memory {format_size(config.memory)}",
            hint="minimum <= startup <= maximum",
        )
    if config.memory_maximum is not None and config.memory_maximum < config.memory:
        raise InvalidInput(
            f"startup memory {format_size(config.memory)} is more than maximum memory {format_size(config.memory_maximum)}",
            hint="minimum <= startup <= maximum",
        )
    if host_total and plan.room > host_total:  # a default maximum (2 x startup) past the host
        raise InvalidInput(
            f"maximum memory {format_size(plan.room)} (the default: twice the startup) is more than the host has "
            f"({host_total >> 20}M)",
            hint="give --maximum explicitly",
        )
    return plan


def check_live_change(name: str, old: VMConfig, new: VMConfig, room: int) -> None:
    """What `vm set-memory` may change on a running VM started with `room` bytes for QEMU's -m."""
    if new.dynamic_memory != old.dynamic_memory:
        raise StateError(f"vm '{name}' is running: dynamic memory can only be turned on or off while the VM is off",
                         hint=f"nestor vm stop {name}")
    if new.dynamic_memory and new.memory != old.memory:
        raise StateError(
            f"vm '{name}' is running with dynamic memory: its startup memory can only change while the VM is off",
            hint="change --minimum/--maximum/--buffer now, or stop the VM",
        )
    wanted = resolve(new).room
    if wanted > room:
        raise StateError(
            f"vm '{name}' was started with room for {format_size(room)} of memory; "
            f"{format_size(wanted)} needs more, which the VM can only get while it is off",
            hint=f"nestor vm stop {name}, then set the memory (--maximum sets the room a running VM can grow into)",
        )


def check_no_hypervisor(name: str, running: bool | None, how: str) -> None:
    """R7: while a hypervisor runs inside the VM, its memory does not change."""
    if running:
        raise PolicyError(
            f"vm '{name}' memory not changed (rule R7): a hypervisor is running inside vm '{name}' "
            "(nested virtualization); memory can only change while the VM is off",
            hint=f"stop the VMs inside '{name}', or stop '{name}' and change it then",
            rule="R7",
        )
    if running is None:
        raise StateError(f"vm '{name}': cannot tell whether a hypervisor runs inside ({how}); memory not changed",
                         hint="try again")


def check_save(name: str, running: bool | None, how: str) -> None:
    """R12-R14: saved state and migration are refused while a hypervisor runs inside the VM."""
    if running:
        raise PolicyError(
            f"vm '{name}' cannot be saved (rules R12-R14): a hypervisor is running inside it; "
            "saving or migrating an AMD L1 while its L2 runs is unsafe",
            hint=f"stop the VMs inside '{name}' first, or stop '{name}'",
            rule="R12-R14",
        )
    if running is None:
        raise StateError(f"vm '{name}': cannot tell whether a hypervisor runs inside ({how}); not saved",
                         hint="try again")


@dataclass(frozen=True)
class GuestMemory:
    """What the balancer observed of one guest, in bytes."""

    actual: int  # what the guest has now (query-balloon)
    total: int | None = None  # the guest's MemTotal (stat-total-memory)
    available: int | None = None  # the guest's MemAvailable (stat-available-memory)
    reported_at: float = 0.0  # wall-clock time of the guest's report; 0: never

    @property
    def demand(self) -> int | None:
        if self.total is None or self.available is None:
            return None
        return max(0, self.total - self.available)

    @property
    def overhead(self) -> int:
        """Memory the guest has that its MemTotal leaves out (kernel image, memmap, reserved)."""
        return max(0, self.actual - self.total) if self.total is not None else 0


def shrink_floor(mem: GuestMemory) -> int | None:
    """The least a running guest can be shrunk to: what it uses now plus a margin."""
    demand = mem.demand
    if demand is None:
        return None
    return mem.overhead + demand + max(SHRINK_MARGIN, demand * 5 // 100)


def check_shrink(name: str, target: int, mem: GuestMemory) -> None:
    floor = shrink_floor(mem)
    if floor is None:
        raise StateError(f"vm '{name}' has not reported its memory use, so it cannot be shrunk safely now",
                         hint="the guest needs the virtio_balloon driver; try again in a few seconds")
    if target < floor:
        raise StateError(
            f"vm '{name}' uses about {format_size(_mib_up(floor - SHRINK_MARGIN))} of memory: "
            f"it cannot shrink to {format_size(target)} (at least {format_size(_mib_up(floor))})",
            hint="free memory in the guest first, or stop the VM and set --startup",
        )


def _mib_up(size: int) -> int:
    return -(-size // MiB) * MiB


def want(plan: MemoryPlan, mem: GuestMemory) -> int | None:
    """Hyper-V's target: the guest's demand plus `buffer` percent of it, within minimum..maximum."""
    demand = mem.demand
    if demand is None:
        return None
    target = _mib_up(mem.overhead + demand * (100 + plan.buffer) // 100)
    return min(max(target, plan.minimum), plan.maximum)


@dataclass(frozen=True)
class Decision:
    target: int | None  # None: leave the balloon as it is
    reason: str
    held: bool = False


def decide(plan: MemoryPlan, mem: GuestMemory, now: float, last_change: float | None,
           hold: str | None = None, pending: int | None = None) -> Decision:
    """One balancer cycle: the guest's report in, a balloon target (or none) out.

    `hold` is why memory must stay still (R7: a hypervisor runs inside); `last_change` is the
    wall-clock time of the last target set (`pending`). A report older than that change
    describes the guest before it, and a balloon still on its way to `pending` (inflating a
    few hundred MiB takes seconds under TCG) is left to arrive: the balancer waits for both.
    """
    if hold:
        return Decision(None, f"holding at {format_size(_mib_up(mem.actual))}: {hold}", held=True)
    target = want(plan, mem)
    if target is None or not mem.reported_at:
        return Decision(None, "waiting for the guest's first memory report")
    if last_change is not None and mem.reported_at <= last_change:
        return Decision(None, "waiting for a report made after the last change")
    gap = max(HYSTERESIS_MIN, mem.actual * HYSTERESIS // 100)
    since = now - last_change if last_change is not None else float("inf")
    if pending is not None and abs(mem.actual - pending) >= gap and since < SETTLE_TIMEOUT:
        return Decision(None, f"balloon moving to {format_size(pending)} (at {mem.actual >> 20}M)")
    outside = mem.actual < plan.minimum or mem.actual > plan.maximum
    if abs(target - mem.actual) < gap and not outside:
        return Decision(None, f"steady at {format_size(_mib_up(mem.actual))}")
    demand = mem.demand or 0
    if target > mem.actual:
        if since < GROW_INTERVAL:
            return Decision(None, "rate limit (grow)")
        return Decision(target, f"grow to {format_size(target)}: demand {demand >> 20}M + {plan.buffer}% buffer")
    if since < SHRINK_INTERVAL:
        return Decision(None, "rate limit (shrink)")
    step = max(SHRINK_STEP_MIN, mem.actual * SHRINK_STEP // 100)
    target = min(max(target, _mib_up(mem.actual - step)), plan.maximum)
    return Decision(target, f"shrink to {format_size(target)}: demand {demand >> 20}M + {plan.buffer}% buffer")
