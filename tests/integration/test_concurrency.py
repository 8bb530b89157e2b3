"""50 mixed lifecycle and settings operations from parallel processes on a handful of VMs.

No internal error (every refusal is an `error:`/`hint:` pair with a state or busy exit code),
no lost update (each setting changed once per VM; a change that succeeded is there at the
end), no ghost QEMU (exactly one QEMU per running VM, none for the others).
"""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import nestor, qemus

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]

VMS = [f"c{i}" for i in range(6)]
WORKERS = 8


def test_fifty_parallel_operations(home: Path) -> None:
    for name in VMS:
        nestor(home, "vm", "new", name, "--memory", "128M", "--config-version", "9.0")
    ops: list[tuple[str, ...]] = []
    expected: dict[tuple[str, ...], tuple[str, str, object]] = {}  # op -> (vm, field, value) if it succeeds
    for index, name in enumerate(VMS):
        count = ("vm", "set-processor", name, "--count", str(2 + index % 3))
        startup = ("vm", "set-memory", name, "--startup", f"{160 + 16 * index}M")
        maximum = ("vm", "set-memory", name, "--maximum", f"{512 + 32 * index}M")
        upgrade = ("vm", "upgrade", name)
        expected[count] = (name, "vcpus", 2 + index % 3)
        expected[startup] = (name, "memory", f"{160 + 16 * index}M")  # `vm show -o json` prints sizes so
        expected[maximum] = (name, "memory_maximum", f"{512 + 32 * index}M")
        expected[upgrade] = (name, "config_version", "11.0")
        ops += [count, startup, maximum, upgrade, ("vm", "start", name), ("vm", "stop", name, "--turn-off"),
                ("vm", "show", name, "-o", "json")]
    ops += [("vm", "list", "-o", "json")] * (50 - len(ops))
    assert len(ops) == 50
    random.Random(8).shuffle(ops)

    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda op: (op, nestor(home, *op, check=False, timeout=180)), ops))

    succeeded = set()
    for op, result in results:
        out = result.stdout + result.stderr
        assert "Traceback" not in out and "internal error" not in out, (op, out)
        if result.returncode == 0:
            succeeded.add(op)
            continue
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), (op, out)
        assert result.returncode in (4, 5), (op, result.returncode, out)  # busy, or not in this state
    shown = {name: json.loads(nestor(home, "vm", "show", name, "-o", "json").stdout) for name in VMS}
    for op, (name, field, value) in expected.items():
        if op in succeeded:
            assert shown[name][field] == value, (op, field, shown[name][field])
    assert sum(op in succeeded for op in expected) >= 8, "too few settings succeeded to say anything"
    running = {name: int(shown[name]["pid"]) for name in VMS if shown[name]["state"] == "running"}
    assert sorted(qemus(home)) == sorted(running.values()), running  # no ghost, none missing
