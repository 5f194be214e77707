"""The JSON tables the benchmark scripts write: one row per key, merged into what is there."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from lape_lib.files import write_json


def command(script: str, argv: list[str] | None) -> str:
    """The command line that made a record: ``python benchmarks/<script>`` and its arguments."""
    return f"python benchmarks/{script}" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))


def host_name(env: dict[str, Any]) -> str:
    """A record's key for the machine that fed the data: the CPU's threads, or the GPU's host."""
    return f"cpu ({env['cpu_threads']} threads)" if env["gpu"] is None else f"{env['gpu']} host"


def merge_row(path: str | Path, key: str, row: dict[str, Any]) -> None:
    """Set ``table[key] = row`` in the JSON file at ``path`` (created if missing), keeping the other rows."""
    path = Path(path)
    table = json.loads(path.read_text()) if path.exists() else {}
    table[key] = row
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, table)  # atomic: a killed benchmark leaves the other rows as they were
