"""/metrics and the audit log across levels: a real L1 (nested-host, its own nestor serve), an L2
defined inside it through its channel; L0's daemon scrapes both levels, labelled with the path."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nestor.client import Client
from nestor.errors import PolicyError
from nestor.service import VMSpec, channel
from nestor.service.core import Core

pytestmark = [pytest.mark.vm, pytest.mark.nested]


def test_metrics_label_nested_levels_and_l1_keeps_its_own_policy_and_audit(l1_home: Path) -> None:
    with channel.client(Core(l1_home), "l1", timeout=120) as inner:
        inner.vm_new(VMSpec("l2", memory=128 << 20))
        assert inner.host_set_policy("block").nesting == "block"  # l1's own policy, in l1's database
        with pytest.raises(PolicyError) as refused:
            inner.vm_new(VMSpec("l2n", memory=128 << 20, nested=True))
        assert refused.value.rule == "nesting-block"
        entries = inner.audit_list()
    assert [(e.via, e.who, e.operation, e.target, e.result) for e in entries] == [
        ("channel", "host (channel)", "vm.new", "l2", "ok"),
        ("channel", "host (channel)", "host.set-policy", "nesting=block", "ok"),
        ("channel", "host (channel)", "vm.new", "l2n", "policy"),
    ]

    # L0's daemon (started on demand when l1 started) scrapes through the tree
    with Client.local(l1_home, timeout=120) as api:
        text = api.metrics()
        assert api.host_policy().nesting == "allow"  # L0's policy is its own
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for family in text_string_to_metric_families(text) for s in family.samples}
    assert found[("nestor_vm_state", (("level", "1"), ("state", "running"), ("vm", "l1")))] == 1
    assert found[("nestor_vm_nested", (("level", "1"), ("vm", "l1")))] == 1
    assert found[("nestor_level_reachable", (("level", "1"), ("vm", "l1")))] == 1
    assert found[("nestor_level_vms", (("host", "l1"), ("level", "1")))] == 1
    assert found[("nestor_vm_state", (("level", "2"), ("state", "off"), ("vm", "l1/l2")))] == 1
    assert found[("nestor_vm_memory_startup_bytes", (("level", "2"), ("vm", "l1/l2")))] == 128 << 20
    assert found[("nestor_host_nesting_blocked", ())] == 0
