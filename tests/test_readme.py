"""README.md stays true: its Python example runs as written, and its commands name real things."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_python_example_runs_as_written() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "README has a ```python example"
    example = blocks[0]
    assert len(example.strip().splitlines()) <= 12
    exec(compile(example, "README.md", "exec"), {})


def test_two_fresh_machine_commands() -> None:
    assert "<!-- main-command -->" in README and "<!-- test-command -->" in README
    main = re.search(r"<!-- main-command -->\n```\n(.*?)\n```", README, flags=re.S).group(1)
    assert "scripts/install.sh" in main and "lape_lib.workbook" in main
    for notebook in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb")):
        assert notebook.name in README, f"README lists {notebook.name}"
