"""policy/depth.py: the quickstart's levels for --depth N, their memory, and the refusals."""

from __future__ import annotations

import itertools

import pytest

from nestor.errors import InvalidInput, StateError
from nestor.policy import depth
from nestor.policy.lab import NESTED_HOST_BASE, VM_OVERHEAD

MiB = 1 << 20
GiB = 1 << 30


def test_depth_2_is_the_quickstart_as_it_was() -> None:
    l1, l2 = depth.levels(2)
    assert (l1.name, l1.memory, l1.vcpus, l1.nested_host) == ("l1", GiB, 2, True)
    assert (l2.name, l2.memory, l2.vcpus, l2.nested_host) == ("l2", 256 * MiB, 1, False)
    assert l2.path == "l1/l2"


@pytest.mark.parametrize("n", [3, 4])
def test_each_nested_host_holds_its_child(n: int) -> None:
    chain = depth.levels(n)
    assert [lvl.name for lvl in chain] == [f"l{k}" for k in range(1, n + 1)]
    assert [lvl.nested_host for lvl in chain] == [True] * (n - 1) + [False]
    for parent, child in itertools.pairwise(chain):
        assert parent.memory >= child.memory + VM_OVERHEAD + NESTED_HOST_BASE  # the lab rule
        assert parent.memory % (256 * MiB) == 0
    assert chain[-1].path == "/".join(f"l{k}" for k in range(1, n + 1))


def test_the_chain_below_a_level() -> None:
    """--inside in l1 of a depth-3 chain: l2 and l3, the same sizes as from L0."""
    assert depth.levels(3, first=2) == depth.levels(3)[1:]


@pytest.mark.parametrize("n", [0, 1, 5, 9])
def test_depth_out_of_range(n: int) -> None:
    with pytest.raises(InvalidInput, match=f"--depth {n}: the depth must be 2 to 4"):
        depth.levels(n)


def test_memory_refusal_names_what_is_needed() -> None:
    chain = depth.levels(4)
    need = depth.memory_needed(chain)
    depth.check_memory(4, chain, need)  # exactly enough
    with pytest.raises(StateError) as err:
        depth.check_memory(4, chain, depth.memory_needed(depth.levels(3)))
    assert "--depth 4 needs" in err.value.message and depth.gib(need) in err.value.message
    assert err.value.hint == "nestor quickstart --depth 3"
    with pytest.raises(StateError) as err:
        depth.check_memory(2, depth.levels(2), 100 * MiB)
    assert err.value.hint == "free memory on this host"


def test_nat_subnets_differ_per_level() -> None:
    assert depth.nat_subnet(1) == ("192.168.100.1/24", "192.168.100.0/24")
    assert len({depth.nat_subnet(k)[1] for k in range(1, 5)}) == 4
