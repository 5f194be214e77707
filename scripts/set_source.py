"""Point every notebook's install cell at one source: the one line to change for a fork or a release.

    python scripts/set_source.py git+https://github.com/you/lape-workbook@v0.2.0
    python scripts/set_source.py --show

The notebooks install ``lape_lib`` on Colab (or any kernel that cannot import it) from
``LAPE_SOURCE``. It must name a fixed ref, a tag or a full commit, never a branch: a branch moves
under a notebook that was written against it. ``tests/test_colab.py`` checks that all notebooks
agree and that a tag matches pyproject's version.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
LINE = re.compile(r'^LAPE_SOURCE = "([^"\n]*)"$', re.M)
SPEC = re.compile(r"git\+https://[\w.\-]+/[\w.\-]+/[\w.\-]+@(v\d+\.\d+\.\d+|[0-9a-f]{40})")


def pinned_ref(spec: str) -> str:
    """The tag or commit ``spec`` pins; ValueError naming what is accepted otherwise."""
    match = SPEC.fullmatch(spec)
    if match is None:
        raise ValueError(f"LAPE_SOURCE {spec!r} is not git+https://HOST/OWNER/REPO@REF with REF a tag vX.Y.Z or a "
                         "40-hex commit (a branch such as @main moves under the notebooks)")
    return match.group(1)


def sources() -> dict[str, str]:
    """Each notebook's LAPE_SOURCE, read from its file."""
    import nbformat

    found = {}
    for path in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        match = next((m for m in (LINE.search(c.source) for c in nb.cells) if m), None)
        if match is None:
            raise ValueError(f"{path.name} has no LAPE_SOURCE line")
        found[path.name] = match.group(1)
    return found


def set_source(spec: str) -> list[str]:
    """Rewrite LAPE_SOURCE in every notebook (outputs untouched); returns the notebooks changed."""
    import nbformat

    pinned_ref(spec)
    changed = []
    for path in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if LINE.search(c.source))
        new = LINE.sub(f'LAPE_SOURCE = "{spec}"', cell.source)
        if new != cell.source:
            cell.source = new
            tmp = path.with_suffix(".ipynb.tmp")
            nbformat.write(nb, tmp)
            tmp.replace(path)
            changed.append(path.name)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", nargs="?", help="git+https://HOST/OWNER/REPO@REF (REF: tag vX.Y.Z or full commit)")
    parser.add_argument("--show", action="store_true", help="print each notebook's LAPE_SOURCE")
    args = parser.parse_args(argv)
    if args.show or args.spec is None:
        for name, spec in sources().items():
            print(f"{name}: {spec}")
        return 0
    try:
        changed = set_source(args.spec)
    except ValueError as err:
        parser.error(str(err))
    print(f"LAPE_SOURCE = {args.spec!r} in every notebook ({len(changed)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
