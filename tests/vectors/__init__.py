"""Golden vectors as data: hex bytes and what they mean, one JSON file per layer.

`check_tshark.py` checks them against tshark's dissectors (the result is in
each file's `checked_with`); the unit tests check overlayd's codecs against them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS_DIR = Path(__file__).resolve().parent


def load(filename: str) -> dict[str, Any]:
    """The whole document of one vector file (`about`, `encap`, `checked_with`, `vectors`)."""
    return json.loads((VECTORS_DIR / filename).read_text())


def vectors(filename: str) -> list[dict[str, Any]]:
    return load(filename)["vectors"]
