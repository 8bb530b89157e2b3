"""The committed OpenAPI document: `python -m nestor.api.openapi [--check] [FILE]`.

Writes docs/openapi.json from ``create_app(...).openapi()``; with --check it only compares and
exits 1 when the file is stale (tests/unit/test_openapi.py does the same).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DEFAULT = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"


def document() -> dict[str, Any]:
    from .app import Settings, create_app

    spec: dict[str, Any] = create_app(Settings(Path("/nonexistent"))).openapi()
    return spec


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    path = Path(args[0]) if args else DEFAULT
    text = render()
    if check:
        if not path.exists() or path.read_text() != text:
            print(f"error: {path} differs from the app's OpenAPI document", file=sys.stderr)
            print("hint: python -m nestor.api.openapi", file=sys.stderr)
            return 1
        return 0
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
