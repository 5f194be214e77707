"""Run `.ci/run` in a clean clone of HEAD, as CI does, and record what it printed.

    python scripts/ci_record.py [--clone ../ci-check]

The clone is made afresh (no .venv, so the install runs from scratch). Its whole log goes to
``<clone>.log``; the record, written atomically to ``results/ci_check/<date>-<commit>.json``, keeps
the exit code, the wall time, the install's seconds and torch version (install.sh's last line),
and each pytest pass's summary line (the README test command's, then the hermetic check's), so
README's test count and times come from a file, not from memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lape_lib.files import git_commit, write_json  # noqa: E402  (the checkout's own package, not an installed one)

SUMMARY = re.compile(r"^=*\s*((?:\d+ \w+(?:, )?)+) in ([\d.]+)s")
INSTALLED = re.compile(r"^installed in (\d+) s: (.*)$")


def parse(log: str) -> dict:
    """The install line and every pytest summary line of a `.ci/run` log."""
    installed = [m.groups() for m in map(INSTALLED.match, log.splitlines()) if m]
    passes = []
    for line in log.splitlines():
        m = SUMMARY.match(line.strip())
        if m:
            counts = {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", m.group(1))}
            passes.append({"counts": counts, "seconds": float(m.group(2)), "line": line.strip("= ")})
    return {"install_s": int(installed[0][0]) if installed else None,
            "installed": installed[0][1] if installed else None, "pytest_passes": passes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clone", default=str(REPO.parent / "ci-check"), help="where to clone HEAD (removed first)")
    args = ap.parse_args(argv)
    clone = Path(args.clone).resolve()
    if clone == REPO or REPO in clone.parents:
        ap.error(f"--clone {clone} lies inside this checkout; choose a folder beside it")
    commit = git_commit(REPO)
    if commit is None:
        ap.error(f"{REPO} is not a git checkout: there is no HEAD to clone")
    shutil.rmtree(clone, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    log_path = clone.with_suffix(".log")
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.run(["bash", ".ci/run"], cwd=clone, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "CI": "true"}).returncode
    wall = time.perf_counter() - t0
    record = {"commit": commit, "date": dt.date.today().isoformat(), "exit_code": rc, "wall_s": round(wall),
              "cpus": os.cpu_count(), "log": str(log_path), **parse(log_path.read_text()),
              "command": "python scripts/ci_record.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))}
    out = REPO / "results" / "ci_check" / f"{record['date']}-{commit}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, record)
    print(f".ci/run exited {rc} after {wall:.0f} s; "
          + "; ".join(p["line"] for p in record["pytest_passes"]) + f"\nwrote {out}")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
