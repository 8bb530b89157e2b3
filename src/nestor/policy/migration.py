"""The seed's state rules applied to moving a VM between hosts (DESIGN.md R12-R14). Pure."""

from __future__ import annotations

from ..errors import InvalidInput, PolicyError, StateError


def check_move(name: str, source: str, dest: str, running: bool | None, how: str, vm_running: bool) -> None:
    """Live migration is refused while a hypervisor runs inside the VM (or while nestor cannot tell).

    KVM's documentation: migrating an AMD L1 while its L2 runs is unsafe; Hyper-V (the seed)
    refuses live migration, save and restore of a VM whose nested hypervisor runs."""
    if source == dest:
        raise InvalidInput(f"vm '{name}' is already on host '{dest}'", hint="name another host")
    if not vm_running:
        return  # an off VM moves only its definition
    if running:
        raise PolicyError(
            f"vm '{name}' cannot be moved (rules R12-R14): a hypervisor is running inside it; "
            "live-migrating an L1 while its L2 runs is unsafe (KVM: AMD nested state)",
            hint=f"stop the VMs inside '{name}' first, or stop '{name}' and move it off",
        )
    if running is None:
        raise StateError(f"vm '{name}': cannot tell whether a hypervisor runs inside ({how}); not moved",
                         hint=f"stop '{name}' and move it off, or try again")


def check_same_extension(name: str, dest: str, source_flag: str | None, dest_flag: str | None) -> None:
    """A running nested VM keeps its CPU across a live move: svm cannot turn into vmx."""
    if source_flag and dest_flag and source_flag != dest_flag:
        raise StateError(
            f"vm '{name}' runs with {source_flag} exposed; host '{dest}' offers {dest_flag}, so it cannot be moved live",
            hint=f"stop '{name}' and move it off (nestor re-plans its CPU for the new host), or pick a host with {source_flag}",
        )
