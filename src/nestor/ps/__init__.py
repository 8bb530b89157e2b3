"""`nestor ps`: the seed's PowerShell, verbatim, over the service facade.

    tokenize  the subset of PowerShell's tokenizer (typographic quotes and dashes included)
    parse     statements → pipelines → commands bound to cmdlet signatures (typed values)
    cmdlets   each cmdlet's signature and its use of nestor.service.Service
    objects   the pipeline's objects and their table / JSON forms
    run       plan a whole script (nothing runs if any part is wrong), then run it
    dns       the DNS servers netsh gives, kept until nestor's store has a place for them
"""

from .run import execute, plan

__all__ = ["execute", "plan"]
