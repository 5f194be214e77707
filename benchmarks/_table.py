"""The JSON tables the benchmark scripts write: one row per key, merged into what is there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lape_lib.files import write_json


def merge_row(path: str | Path, key: str, row: dict[str, Any]) -> None:
    """Set ``table[key] = row`` in the JSON file at ``path`` (created if missing), keeping the other rows."""
    path = Path(path)
    table = json.loads(path.read_text()) if path.exists() else {}
    table[key] = row
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, table)  # atomic: a killed benchmark leaves the other rows as they were
