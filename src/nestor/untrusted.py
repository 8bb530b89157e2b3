"""Reading JSON that an untrusted peer sent (a guest's nestor, another host's): bounded.

`json.loads` costs memory in proportion to the objects it builds, not to the bytes it reads: 4 MiB
of `{},` is 1.4 million dicts. So a document is refused before parsing when it may hold more than
`max_containers` objects and arrays (counted as `{` and `[` bytes: an upper bound, since brackets
inside strings count too), and a nesting deeper than the parser's recursion limit is a ValueError
like any other malformed document, never a RecursionError.
"""

from __future__ import annotations

import json
from typing import Any

MAX_CONTAINERS = 200_000  # objects + arrays in one answer; a 1,000-VM list is ~10,000


class TooLarge(ValueError):
    pass


def loads(data: bytes | str, max_containers: int = MAX_CONTAINERS) -> Any:
    """json.loads, refusing more than `max_containers` objects and arrays (ValueError)."""
    raw = data.encode() if isinstance(data, str) else data
    if raw.count(b"{") + raw.count(b"[") > max_containers:
        raise TooLarge(f"more than {max_containers} JSON objects and arrays")
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
