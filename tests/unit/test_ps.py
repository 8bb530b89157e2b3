"""`nestor ps` without a host: the tokenizer, binding to cmdlet signatures, and planning.

The seed's own lines are checked as the seed writes them (typographic quotes, the en dash).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from nestor.errors import InvalidInput, NestorError, NotFound
from nestor.model import VMState
from nestor.ps import plan
from nestor.ps.network import NetshDns
from nestor.ps.objects import PSObject, render, to_json
from nestor.ps.tokenize import Kind, tokenize
from nestor.service.types import StopHow, StopResult, VMInfo

# The seed (shared/seed/000_3ebcd23104e572cc.txt), byte for byte, so CI has it too.
SEED = Path(__file__).resolve().parents[1] / "data" / "seed.txt"
SHARED_SEED = Path("/work/shared/seed/000_3ebcd23104e572cc.txt")


def kinds(text: str) -> list[tuple[Kind, str]]:
    return [(t.kind, t.text) for t in tokenize(text)]


def one(text: str) -> dict[str, object]:
    """The bound arguments of a one-command script."""
    (item,) = plan(text)
    (cmd,) = item.statement.commands
    return cmd.args


def refused(text: str) -> str:
    with pytest.raises(InvalidInput) as info:
        plan(text)
    assert info.value.hint, "every refusal carries a hint"
    return info.value.message


# -- tokenizer ---------------------------------------------------------------------------------------
def test_parameters_with_any_dash() -> None:
    for dash in "-\u2013\u2014\u2015":
        assert kinds(f"New-NetNat {dash}Name LocalNAT")[:3] == [
            (Kind.WORD, "New-NetNat"), (Kind.PARAM, "Name"), (Kind.WORD, "LocalNAT")]


def test_typographic_and_plain_quotes() -> None:
    assert kinds("x “192.168.100.0/24”")[1] == (Kind.STRING, "192.168.100.0/24")
    assert kinds('x "vEthernet (VmNat)"')[1] == (Kind.STRING, "vEthernet (VmNat)")
    assert kinds("x ‘it’’s’")[1] == (Kind.STRING, "it’s")  # a doubled quote is one, any of the kind
    assert kinds("x 'a''b'")[1] == (Kind.STRING, "a'b")
    assert kinds('x "a`"b`tc"')[1] == (Kind.STRING, 'a"b\tc')
    assert kinds('x „low”')[1] == (Kind.STRING, "low")
    assert kinds("x “”")[1] == (Kind.STRING, "")


def test_single_quotes_are_literal() -> None:
    assert kinds("x '$true `n'")[1] == (Kind.STRING, "$true `n")


def test_word_with_a_quoted_part_is_one_argument() -> None:
    assert kinds('netsh address="1.1.1.1"')[1] == (Kind.STRING, "address=1.1.1.1")


def test_booleans_and_null() -> None:
    toks = tokenize("x $true $FALSE $Null")
    assert [(t.kind, t.value) for t in toks[1:4]] == [(Kind.VARIABLE, True), (Kind.VARIABLE, False),
                                                     (Kind.VARIABLE, None)]


def test_separators_comments_and_continuation() -> None:
    toks = kinds("Get-VM # all of them\nGet-VM a; Get-VM `\n  b | Get-VMProcessor")
    words = [t for k, t in toks if k is Kind.WORD]
    assert words == ["Get-VM", "Get-VM", "a", "Get-VM", "b", "Get-VMProcessor"]
    assert [k for k, _ in toks].count(Kind.PIPE) == 1
    assert [k for k, _ in toks].count(Kind.END) == 3  # newline, ';', and the end


def test_param_colon_form() -> None:
    toks = tokenize("Stop-VM x -Force:$false")
    assert toks[2].kind is Kind.PARAM and toks[2].colon and toks[3].value is False


def test_negative_number_is_a_value() -> None:
    assert kinds("x -5")[1] == (Kind.WORD, "-5")


@pytest.mark.parametrize(("text", "needle"), [
    ("Get-VM $name", "variables are not supported"),
    ('Get-VM "vm-$name"', "variables"),
    ("Get-VM { 1 }", "script blocks"),
    ("Get-VM (Get-VM)", "subexpressions"),
    ("Get-VM a,b", "arrays"),
    ("Get-VM > out.txt", "redirection"),
    ("Set-VMProcessor -VMName <VMName> -Count 2", "placeholder '<VMName>' is not filled in"),
    ('Get-VM "open', "missing its closing quote"),
    ("Get-VM “open", "missing its closing quote"),
    ("Get-VM a || Get-VM b", "'||'"),
])
def test_unsupported_syntax_is_refused_with_a_position(text: str, needle: str) -> None:
    with pytest.raises(InvalidInput) as info:
        tokenize(text)
    assert needle in info.value.message and "line 1, column" in info.value.message and info.value.hint


def test_error_positions_count_lines() -> None:
    with pytest.raises(InvalidInput) as info:
        tokenize("Get-VM\nGet-VM   $x")
    assert "(line 2, column 10)" in info.value.message


# -- binding -----------------------------------------------------------------------------------------
def test_seed_processor_lines() -> None:
    assert one("Set-VMProcessor -VMName L1 -ExposeVirtualizationExtensions $true") == {
        "VMName": "l1", "ExposeVirtualizationExtensions": True}
    assert one("Set-VMProcessor -VMName L1 -ExposeVirtualizationExtensions $false")[
        "ExposeVirtualizationExtensions"] is False


def test_booleans_accept_numbers_not_words() -> None:
    assert one("Set-VMProcessor l1 -ExposeVirtualizationExtensions 1")["ExposeVirtualizationExtensions"] is True
    assert one("Set-VMProcessor l1 -ExposeVirtualizationExtensions 0")["ExposeVirtualizationExtensions"] is False
    message = refused("Set-VMProcessor l1 -ExposeVirtualizationExtensions true")
    assert "accepts only Boolean values and numbers" in message


def test_seed_nat_line_with_en_dashes_and_typographic_quotes() -> None:
    args = one("New-NetNat –Name LocalNAT –InternalIPInterfaceAddressPrefix “192.168.100.0/24”")
    assert args == {"Name": "localnat", "InternalIPInterfaceAddressPrefix": ipaddress.IPv4Network("192.168.100.0/24")}


def test_parameter_names_are_case_insensitive_prefixes_and_aliases() -> None:
    assert one("set-vmprocessor -vmname X -expose $TRUE -c 2") == {
        "VMName": "x", "ExposeVirtualizationExtensions": True, "Count": 2}
    assert one("Start-VM -VMName web")["Name"] == "web"
    assert "ambiguous" in refused("Set-VMMemory web -M 1GB")


def test_size_literals() -> None:
    args = one("Set-VMMemory web -StartupBytes 512MB -MinimumBytes 1.5GB -MaximumBytes 4gb -Buffer 20")
    assert args["StartupBytes"] == 512 << 20
    assert args["MinimumBytes"] == 3 << 29
    assert args["MaximumBytes"] == 4 << 30
    assert args["Buffer"] == 20
    assert one("New-VM web 1073741824")["MemoryStartupBytes"] == 1 << 30
    assert one("New-VM web '256MB'")["MemoryStartupBytes"] == 256 << 20
    assert "expects a number such as 512MB" in refused("New-VM web -MemoryStartupBytes lots")
    assert "whole number of bytes" in refused("New-VM web -MemoryStartupBytes 1.5")


def test_new_vm_generation() -> None:
    assert one("New-VM -Name Web -MemoryStartupBytes 512MB -SwitchName LAN -Generation 1") == {
        "Name": "web", "MemoryStartupBytes": 512 << 20, "SwitchName": "lan", "Generation": 1}
    message = refused("New-VM -Name web -Generation 2")
    assert "generation 2" in message and "not available" in message


def test_switches_and_their_colon_form() -> None:
    assert one("Stop-VM web -TurnOff -Force") == {"Name": "web", "TurnOff": True, "Force": True}
    assert one("Stop-VM web -TurnOff:$false")["TurnOff"] is False


def test_on_off_values() -> None:
    assert one("Set-VMNetworkAdapter -VMName web -MacAddressSpoofing on")["MacAddressSpoofing"] == "On"
    assert "does not accept 'Maybe'" in refused("Set-VMNetworkAdapter -VMName web -MacAddressSpoofing Maybe")


def test_missing_value_unknown_and_unsupported_parameters() -> None:
    assert "missing an argument for parameter -IPAddress" in refused(
        'Get-NetAdapter "vEthernet (VmNat)" | New-NetIPAddress -IPAddress -AddressFamily IPv4 -PrefixLength 24')
    message = refused("New-VM web -NewVHDPath C:\\vm.vhdx")
    assert "parameter -NewVHDPath is not supported" in message
    with pytest.raises(InvalidInput) as info:
        plan("Set-VMProcessor web -Frobnicate 1")
    assert "-Frobnicate is not supported" in info.value.message
    assert info.value.message.endswith("the nestor command: nestor vm set-processor")
    assert "nestor vm set-processor" in (info.value.hint or "")
    assert "given twice" in refused("Set-VMProcessor web -Count 1 -Count 2")
    assert "no parameter accepts the value 'extra'" in refused("Start-VM web extra")
    assert "is required" in refused("New-VMSwitch -SwitchType Internal")


def test_names_follow_nestor_rules_after_case_folding() -> None:
    assert one("New-VMSwitch -Name VmNAT -SwitchType Internal")["Name"] == "vmnat"
    assert "invalid switch name 'my switch'" in refused('New-VMSwitch -Name "My Switch" -SwitchType Internal')


def test_unknown_and_unavailable_cmdlets_name_the_nestor_command() -> None:
    assert "'Frob-VM' is not a cmdlet nestor ps accepts" in refused("Frob-VM x")
    assert "renaming checkpoints is not in nestor" in refused("Rename-VMCheckpoint -VMName web -Name a -NewName b")
    assert "the nestor command: nestor host check" in refused("Get-VMHost")


def test_a_bad_line_anywhere_refuses_the_whole_script() -> None:
    with pytest.raises(InvalidInput) as info:
        plan("New-VMSwitch -Name a -SwitchType Internal\nNew-VM web\nRename-VMCheckpoint web a b\n")
    assert "(line 3, column 1)" in info.value.message


def test_switch_parameter_sets() -> None:
    assert one("New-VMSwitch -Name ext -NetAdapterName eth1") == {"Name": "ext", "NetAdapterName": "eth1"}
    assert "-NetAdapterName makes an external switch" in refused(
        "New-VMSwitch -Name ext -SwitchType Internal -NetAdapterName eth1")
    assert "needs -NetAdapterName" in refused("New-VMSwitch -Name ext -SwitchType External")
    assert "give -SwitchType" in refused("New-VMSwitch -Name ext")


def test_nothing_to_change_is_refused() -> None:
    assert "nothing to change" in refused("Set-VMProcessor web")
    assert "nothing to change" in refused("Set-VMMemory web")


# -- pipelines ---------------------------------------------------------------------------------------
def test_seed_spoofing_pipeline() -> None:
    (item,) = plan("Get-VMNetworkAdapter -VMName L1 | Set-VMNetworkAdapter -MacAddressSpoofing On")
    get, set_ = item.statement.commands
    assert get.name == "Get-VMNetworkAdapter" and get.args == {"VMName": "l1"}
    assert set_.name == "Set-VMNetworkAdapter" and set_.args == {"MacAddressSpoofing": "On"}


def test_seed_address_pipeline() -> None:
    (item,) = plan('Get-NetAdapter "vEthernet (VmNat)" | New-NetIPAddress -IPAddress 192.168.100.1 '
                   "-DefaultGateway 192.168.100.1 -AddressFamily IPv4 -PrefixLength 24")
    get, new = item.statement.commands
    assert get.args == {"Name": "vEthernet (VmNat)"}
    assert new.args == {"IPAddress": ipaddress.IPv4Address("192.168.100.1"),
                        "DefaultGateway": ipaddress.IPv4Address("192.168.100.1"),
                        "AddressFamily": "IPv4", "PrefixLength": 24}


def test_a_gateway_other_than_the_address_is_a_guest_line() -> None:
    message = refused('Get-NetAdapter "vEthernet (VmNat)" | New-NetIPAddress -IPAddress 192.168.100.2 '
                      "-DefaultGateway 192.168.100.1 -AddressFamily IPv4 -PrefixLength 24")
    assert "-DefaultGateway 192.168.100.1 is not -IPAddress 192.168.100.2" in message


def test_pipeline_continues_after_a_newline() -> None:
    (item,) = plan("Get-VM web |\n  Stop-VM -TurnOff")
    assert [c.name for c in item.statement.commands] == ["Get-VM", "Stop-VM"]


def test_pipeline_type_checks() -> None:
    assert "cannot take the objects of Get-NetAdapter" in refused('Get-NetAdapter "vEthernet (x)" | Start-VM')
    assert "writes no objects to the pipeline without -Passthru" in refused("Start-VM web | Stop-VM")
    plan("Start-VM web -Passthru | Stop-VM")
    assert "both say what to act on" in refused(
        "Get-VMNetworkAdapter -VMName a | Set-VMNetworkAdapter -VMName b -MacAddressSpoofing On")
    assert "empty pipe element" in refused("Get-VM |")
    assert "empty pipe element" in refused("| Get-VM")
    assert "IPv6 is not supported" in refused(
        'Get-NetAdapter "vEthernet (x)" | New-NetIPAddress -IPAddress 10.0.0.1 -PrefixLength 8 -AddressFamily IPv6')


def test_format_cmdlets_take_any_object() -> None:
    (item,) = plan("Get-VMProcessor l1 | fl")
    assert [c.name for c in item.statement.commands] == ["Get-VMProcessor", "Format-List"]
    plan("Get-VM | Format-Table; New-VM web | Out-Null")
    assert "cannot take the objects of Format-List" in refused("Get-VM | Format-List | Start-VM")


def test_required_pipeline_parameter_needs_the_pipeline() -> None:
    assert "-InterfaceAlias is required" in refused("New-NetIPAddress -IPAddress 10.0.0.1 -PrefixLength 24")
    plan('New-NetIPAddress -IPAddress 10.0.0.1 -PrefixLength 24 -InterfaceAlias "vEthernet (x)"')


# -- netsh -------------------------------------------------------------------------------------------
def test_seed_netsh_line() -> None:
    (item,) = plan("Netsh interface ip add dnsserver “vEthernet (VmNat)” address=1.1.1.1")
    assert item.statement.commands[0].raw == NetshDns("vmnat", ipaddress.IPv4Address("1.1.1.1"), None)
    (item,) = plan('netsh int ipv4 add dnsservers name="vEthernet (VmNat)" 8.8.8.8 index=1 validate=no')
    assert item.statement.commands[0].raw == NetshDns("vmnat", ipaddress.IPv4Address("8.8.8.8"), 1)


def test_netsh_refusals() -> None:
    assert "only 'interface ip add dnsserver'" in refused('netsh interface ip set address "vEthernet (x)" static')
    assert "placeholder '<my DNS server>'" in refused(
        "Netsh interface ip add dnsserver “vEthernet (VmNat)” address=<my DNS server>")
    assert "expects an IPv4 address" in refused('netsh interface ip add dnsserver "vEthernet (x)" address=dns.example')
    with pytest.raises(NestorError) as info:
        plan('netsh interface ip add dnsserver "Ethernet" address=1.1.1.1')
    assert "'Ethernet' is not an adapter nestor ps knows" in info.value.message


def test_dns_servers_are_kept_per_switch_and_bridge(tmp_path: Path) -> None:
    from nestor.ps import dns

    one_, two = ipaddress.IPv4Address("192.0.2.1"), ipaddress.IPv4Address("192.0.2.2")
    assert dns.add(tmp_path, "vmnat", "nsbr2", one_) == ["192.0.2.1"]
    assert dns.add(tmp_path, "vmnat", "nsbr2", two, index=1) == ["192.0.2.2", "192.0.2.1"]
    assert dns.add(tmp_path, "vmnat", "nsbr2", two) == ["192.0.2.1", "192.0.2.2"]  # moved, not doubled
    assert dns.servers(tmp_path, "vmnat", "nsbr2") == ["192.0.2.1", "192.0.2.2"]
    assert dns.servers(tmp_path, "vmnat", "nsbr7") == []  # a new switch of the same name starts empty
    assert dns.replace(tmp_path, "vmnat", "nsbr2", [two, two]) == ["192.0.2.2"]
    dns.forget(tmp_path, "vmnat")
    assert dns.servers(tmp_path, "vmnat", "nsbr2") == []


# -- the seed, as written --------------------------------------------------------------------------------
def seed_commands() -> list[str]:
    """Every command line in the seed: a line that starts with a cmdlet or Netsh."""
    import re

    lines = SEED.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if re.match(r"^\s*([A-Z][a-z]+-[A-Za-z]+|Netsh)\s", line)]


@pytest.mark.skipif(not SHARED_SEED.exists(), reason="no shared seed on this machine")
def test_the_seed_copy_is_the_seed() -> None:
    assert SEED.read_bytes() == SHARED_SEED.read_bytes()


def test_the_seed_lines_as_written() -> None:
    """The seed leaves values out; unfilled, each line gets a precise refusal."""
    lines = seed_commands()
    assert len(lines) == 8
    assert "“" in lines[4] and "\u2013Name" in lines[4]
    messages = []
    for line in lines:
        try:
            plan(line)
            messages.append("ok")
        except InvalidInput as exc:
            messages.append(exc.message)
    assert "placeholder '<VMName>'" in messages[0] and "placeholder '<VMName>'" in messages[2]
    assert messages[3] == "ok"  # New-VMSwitch -Name VmNAT -SwitchType Internal
    assert "New-NetNat -InternalIPInterfaceAddressPrefix is empty" in messages[4]
    assert "missing an argument for parameter -IPAddress" in messages[5]
    assert "placeholder '<my DNS server>'" in messages[7]


# -- output ------------------------------------------------------------------------------------------
def test_table_and_json() -> None:
    objs = [PSObject("processor", "VMProcessor", {"VMName": "l1", "Count": 2, "ExposeVirtualizationExtensions": True,
                                                   "HypervisorRunning": None})]
    assert render(objs).splitlines() == [
        "VMName Count ExposeVirtualizationExtensions HypervisorRunning",
        "------ ----- ------------------------------ -----------------",
        "l1     2     True",
    ]
    assert render([PSObject("processor", "VMProcessor", {"VMName": "l1", "Count": 2}, view="list")]).splitlines() == [
        "VMName : l1",
        "Count  : 2",
    ]
    assert to_json(objs) == [{"Type": "VMProcessor", "VMName": "l1", "Count": 2,
                              "ExposeVirtualizationExtensions": True, "HypervisorRunning": None}]


def test_checkpoint_cmdlets_are_planned_with_their_parameters() -> None:
    plan("Checkpoint-VM -Name Web -SnapshotName Before")
    plan("Checkpoint-VM web")
    plan("Get-VM web | Checkpoint-VM -Passthru | Format-List")
    plan("Get-VMCheckpoint -VMName web | Restore-VMCheckpoint")
    plan("Get-VMSnapshot web before | Remove-VMSnapshot")
    plan("Restore-VMCheckpoint -Name before -VMName web -Passthru")
    plan("Remove-VMCheckpoint -VMName web")
    assert "invalid checkpoint name 'before upgrade'" in refused('Checkpoint-VM web -SnapshotName "Before upgrade"')
    assert "-VMName is required" in refused("Restore-VMCheckpoint -Name before")
    assert "-IncludeAllChildSnapshots is not supported" in refused("Remove-VMCheckpoint web -IncludeAllChildSnapshots")
    assert "-Name and the pipeline's objects" in refused("Get-VMCheckpoint web | Restore-VMCheckpoint -Name x")
    assert "writes no objects to the pipeline without -Passthru" in refused("Checkpoint-VM web | Format-List")
    assert "cannot take the objects of Get-VM" in refused("Get-VM web | Restore-VMCheckpoint")


# -- -ComputerName: a level below ----------------------------------------------------------------
def test_computer_name_is_a_vm_path_of_this_host() -> None:
    assert one("Get-VM -ComputerName L1")["ComputerName"] == "l1"
    assert one("Get-VM -ComputerName l1/L2")["ComputerName"] == "l1/l2"
    for local in ("localhost", "LocalHost", "."):
        assert one(f"Get-VM -ComputerName {local}")["ComputerName"] == ""
    args = one("Stop-VM -Name l2 -ComputerName l1 -TurnOff")
    assert (args["Name"], args["ComputerName"], args["TurnOff"]) == ("l2", "l1", True)
    assert one("Set-VMProcessor -VMName l2 -Count 2 -Comp:l1")["ComputerName"] == "l1"  # a prefix, the colon form
    assert one("Set-VMProcessor -VMName l2 -c 2")["Count"] == 2  # a prefix of the cmdlet's own parameter stays its
    for cmdlet in ("Start-VM l2", "Set-VMMemory -VMName l2 -StartupBytes 512MB", "Get-VMNetworkAdapter -VMName l2",
                   "New-VMSwitch -Name lan -SwitchType Internal", "Get-NetNat", "Checkpoint-VM l2 c1"):
        assert one(f"{cmdlet} -ComputerName l1")["ComputerName"] == "l1", cmdlet
    for bad, needle in (("l1//l2", "is not a VM path"), ("Bad_Name", "is not a VM path"), ("'l1 l2'", "is not a VM path")):
        assert needle in refused(f"Get-VM -ComputerName {bad}"), bad


def test_computer_name_is_refused_where_nestor_ps_keeps_data_here() -> None:
    for script in ('Set-DnsClientServerAddress -InterfaceAlias "vEthernet (lan)" -ServerAddresses 192.0.2.53 '
                   '-ComputerName l1', 'Get-DnsClientServerAddress -ComputerName l1', "Get-VM | Format-List -ComputerName l1"):
        with pytest.raises(InvalidInput) as info:
            plan(script)
        assert "-ComputerName is not supported" in info.value.message, script
        assert "nestor vm exec l1 -- nestor ps" in (info.value.hint or ""), script


class _Level:
    """A level of pure data for the ps runner's routing (no QEMU): its VMs and the levels inside."""

    def __init__(self, vms: dict[str, VMState], inside: dict[str, _Level] | None = None) -> None:
        self.vms = vms
        self.inside = inside or {}
        self.calls: list[str] = []
        self.closed = 0

    def _info(self, name: str) -> VMInfo:
        if name not in self.vms:
            raise NotFound(f"vm '{name}' not found", hint="nestor vm list")
        return VMInfo(name, self.vms[name], 1, 256 << 20, False, "11.0", "appliance")

    def vm_list(self) -> list[VMInfo]:
        return [self._info(n) for n in sorted(self.vms)]

    def vm_show(self, name: str) -> VMInfo:
        return self._info(name)

    def vm_stop(self, name: str, turn_off: bool = False, timeout: float = 30.0) -> StopResult:
        self._info(name)
        self.calls.append(f"stop {name}")
        self.vms[name] = VMState.OFF
        return StopResult(name, StopHow.TURNED_OFF if turn_off else StopHow.SHUT_DOWN, timeout)

    def guest(self, name: str) -> _Level:
        if name not in self.inside:
            raise NotFound(f"vm '{name}' not found", hint="nestor vm list")
        return self.inside[name]

    def close(self) -> None:
        self.closed += 1


def _ps(root: _Level, script: str) -> list[PSObject]:
    from nestor.ps import execute

    return [o for _, objects in execute(root, script, lambda _: None) for o in objects]  # type: ignore[arg-type]


def test_a_cmdlet_runs_on_the_level_its_computer_name_names() -> None:
    l2 = _Level({"l3": VMState.RUNNING})
    l1 = _Level({"l2": VMState.RUNNING, "web": VMState.RUNNING}, {"l2": l2})
    root = _Level({"l1": VMState.RUNNING, "web": VMState.RUNNING}, {"l1": l1})
    (vm,) = _ps(root, "Stop-VM -Name web -ComputerName l1 -TurnOff -Passthru")
    assert l1.calls == ["stop web"] and root.calls == [] and l1.vms["web"] is VMState.OFF
    assert (vm["Name"], vm["ComputerName"], vm["State"]) == ("web", "l1", "Off")
    assert l1.closed == 1  # the levels a script opened are closed when it ends
    # The pipeline's objects carry their level: the next cmdlet acts there.
    _ps(root, "Get-VM -ComputerName l1/l2 | Stop-VM")
    assert l2.calls == ["stop l3"] and root.calls == [] and l1.calls == ["stop web"]
    # This host's objects have no ComputerName (as before), and the same name here is another VM.
    (here,) = _ps(root, "Get-VM web")
    assert "ComputerName" not in here.props and here["State"] == "Running"
    assert [o["ComputerName"] for o in _ps(root, "Get-VM -ComputerName l1 | Format-List")] == ["l1", "l1"]


def test_errors_at_a_level_name_the_vm_by_its_path() -> None:
    root = _Level({"l1": VMState.RUNNING}, {"l1": _Level({"l2": VMState.RUNNING})})
    with pytest.raises(NotFound) as info:
        _ps(root, "Stop-VM l9 -ComputerName l1")
    assert info.value.message == "vm 'l1/l9': no VM 'l9' in l1"
    with pytest.raises(NotFound) as info:
        _ps(root, "Get-VM -ComputerName l7")
    assert "l7" in info.value.message
    with pytest.raises(InvalidInput) as refused_info:
        _ps(root, "Get-VM -ComputerName l1 | Stop-VM -ComputerName localhost")
    assert "pipeline's object is of 'l1'" in refused_info.value.message and refused_info.value.hint


class _TpmLevel:
    """A level whose VMs have a TPM switch: what Enable/Disable-VMTPM ask of it."""

    def __init__(self) -> None:
        self.tpm = {"win": False, "web": True}
        self.calls: list[tuple[str, bool, bool]] = []

    def _info(self, name: str) -> VMInfo:
        if name not in self.tpm:
            raise NotFound(f"vm '{name}' not found", hint="nestor vm list")
        return VMInfo(name, VMState.OFF, 1, 256 << 20, False, "11.0", "debian-bookworm", tpm=self.tpm[name])

    def vm_list(self) -> list[VMInfo]:
        return [self._info(n) for n in sorted(self.tpm)]

    def vm_show(self, name: str) -> VMInfo:
        return self._info(name)

    def vm_set_tpm(self, name: str, on: bool, delete_state: bool = False) -> VMInfo:
        self._info(name)
        self.calls.append((name, on, delete_state))
        self.tpm[name] = on
        return self._info(name)

    def close(self) -> None:
        pass


def test_tpm_cmdlets() -> None:
    from nestor.ps import execute

    level = _TpmLevel()

    def run(script: str) -> list[PSObject]:
        return [o for _, objects in execute(level, script, lambda _: None) for o in objects]  # type: ignore[arg-type]

    assert run("Set-VMKeyProtector -VMName win -NewLocalKeyProtector; Enable-VMTPM -VMName win") == []
    assert level.calls == [("win", True, False)]
    (security,) = run("Get-VMSecurity -VMName win")
    assert security.type_name == "VMSecurity" and security["TpmEnabled"] is True
    (off,) = run("Get-VM web | Disable-VMTPM -Passthru")
    assert off["VMName"] == "web" and off["TpmEnabled"] is False
    assert level.calls[-1] == ("web", False, False)  # Disable-VMTPM keeps the TPM's state
    assert "nestor vm set-tpm" in refused("Enable-VMTPM -VMName win -Frobnicate 1")
    assert "-VMName is required" in refused("Disable-VMTPM")
