"""The `nestor` command, as the console script and as `python -m nestor` run it.

`vm start NAME` goes to the home's warm daemon when it runs as this process would
(nestor/warm_start.py: no click, no service imported); everything else is the click CLI.
"""

from __future__ import annotations

import sys


def main() -> None:
    if "start" in sys.argv[1:5]:
        from . import warm_start

        code = warm_start.run(sys.argv[1:])
        if code is not None:
            sys.exit(code)
    from .cli import main as cli_main

    cli_main()
