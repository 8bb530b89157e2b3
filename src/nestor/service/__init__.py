"""nestor's service layer: one facade (:class:`Service`) over every use case, typed in and out.

    from nestor.service import Service, VMSpec
    service = Service(Path("/var/lib/nestor"))
    service.vm_new(VMSpec("web", memory=512 << 20))
    service.vm_start("web")

The CLI, the REST API (nestor.api), `nestor ps` and the web UI call only this; the layers
inside are drawn in service/core.py.
"""

from .facade import Service
from .net_types import (
    AdapterInfo,
    AdapterSpec,
    GuardChange,
    GuardKind,
    Lease,
    LinkState,
    NatInfo,
    NatSpec,
    SwitchDetail,
    SwitchInfo,
    SwitchRemoval,
    SwitchSpec,
    SwitchType,
)
from .types import (
    CheckResult,
    ExecResult,
    HostReport,
    ImageInfo,
    MemoryChange,
    MemoryOutcome,
    MemoryResult,
    NewVM,
    ProcessorResult,
    SaveResult,
    StopHow,
    StopResult,
    Tree,
    TreeNode,
    VMInfo,
    VMSpec,
    VMState,
    to_json,
)

__all__ = [
    "AdapterInfo", "AdapterSpec", "CheckResult", "ExecResult", "GuardChange", "GuardKind", "HostReport", "ImageInfo",
    "Lease", "LinkState", "MemoryChange", "MemoryOutcome", "MemoryResult", "NatInfo", "NatSpec", "NewVM",
    "ProcessorResult", "SaveResult", "Service", "StopHow", "StopResult", "SwitchDetail", "SwitchInfo", "SwitchRemoval",
    "SwitchSpec", "SwitchType", "Tree", "TreeNode", "VMInfo", "VMSpec", "VMState", "to_json",
]
