"""Checkpoints and the seed's nesting rules (pure).

R12-R14: Microsoft's nested checker says saved state and checkpoints do not mix with a running
nested hypervisor, and KVM's documentation says saving an AMD L1 while its L2 runs is unsafe. A
checkpoint of a running VM saves its memory, so it is refused exactly when `vm save` is.
"""

from __future__ import annotations

from ..errors import PolicyError, StateError


def check_checkpoint(name: str, action: str, running: bool | None, how: str) -> None:
    """``action``: 'taken' or 'applied'. ``running``: a hypervisor runs inside (None: unknown)."""
    if running:
        raise PolicyError(
            f"a checkpoint of vm '{name}' cannot be {action} (rules R12-R14): a hypervisor is running inside it; "
            "checkpoints of a running VM hold its memory, and saving an AMD L1 while its L2 runs is unsafe",
            hint=f"stop the VMs inside '{name}' first, or stop '{name}' (checkpoints of a stopped VM are allowed)",
            rule="R12-R14",
        )
    if running is None:
        raise StateError(f"vm '{name}': cannot tell whether a hypervisor runs inside ({how}); no checkpoint {action}",
                         hint="try again")
