"""`nestor ps`: the seed's PowerShell, verbatim, over the service facade.

    tokenize  the subset of PowerShell's tokenizer (typographic quotes and dashes included)
    parse     statements → pipelines → commands bound to cmdlet signatures (typed values)
    cmdlets   the table: each cmdlet's signature, pipeline kinds and implementation
    vms       the VM cmdlets over nestor.service.Service (lifecycle, processor, memory)
    network   the network cmdlets over the facade's network use cases (adapters, switches, NAT, addresses, netsh)
    session   what each cmdlet gets (the Hypervisor of its level, -ComputerName; notes) and shared helpers
    objects   the pipeline's objects and their table / JSON forms
    run       plan a whole script (nothing runs if any part is wrong), then run it
    dns       the DNS servers netsh gives, kept until nestor's store has a place for them
"""

from .run import execute, plan

__all__ = ["execute", "plan"]
