"""Is the browser test stable? Run it N times in a row beside a CPU-bound process and record each run.

    .venv/bin/python scripts/browser_stability.py --runs 10   # -> results/browser_stability/<date>-<commit>.json

Each run is ``pytest tests/test_browser.py -k run_all`` (every notebook opened in JupyterLab and run
with Run All, smoke mode) in a clone of HEAD, so uncommitted edits cannot help it. A busy loop
(``while True: pass``, one process) runs for the whole series: on a 2-core machine the notebooks'
kernels, JupyterLab and Chromium share the other core with it. Stops at the first failing run,
since the claim is N passes *in a row*. The record (written atomically after every run, so a
killed series keeps what it had) holds each run's exit code, seconds, the load average and every
line where the test clicked again or restarted a kernel, so a pass that needed a retry is visible.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lape_lib.files import git_commit, write_json  # noqa: E402  (the checkout's own package)

RETRY_LINE = re.compile(r"^browser test: .*$", re.M)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="default: results/browser_stability/<date>-<commit>.json")
    parser.add_argument("--no-load", action="store_true", help="run without the CPU-bound process beside it")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    commit = git_commit(ROOT, short=False)
    if commit is None:
        parser.error(f"{ROOT} is not a git checkout: there is no HEAD to clone")
    if args.out is None:
        args.out = ROOT / "results" / "browser_stability" / f"{time.strftime('%Y-%m-%d')}-{commit[:7]}.json"
    work = Path(tempfile.mkdtemp(prefix="browser-stability-"))
    clone = work / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    record = {"command": "python scripts/browser_stability.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "commit": commit, "cpus": os.cpu_count(), "load": None if args.no_load else "one `while True: pass` process",
              "test": "pytest tests/test_browser.py -k run_all (5 notebooks per run)",
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": []}
    burner = None if args.no_load else subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        for i in range(1, args.runs + 1):
            t0 = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/test_browser.py", "-k", "run_all",
                 f"--basetemp={work / f'run{i}'}"],
                cwd=clone, env={**os.environ, "PYTHONPATH": str(clone)}, capture_output=True, text=True)
            tail = proc.stdout.strip().splitlines()[-1:] or [""]
            run = {"run": i, "rc": proc.returncode, "seconds": round(time.monotonic() - t0, 1),
                   "loadavg_1min_after": round(os.getloadavg()[0], 2), "summary": tail[0],
                   "retries": RETRY_LINE.findall(proc.stdout)}
            if proc.returncode != 0:
                run["output_tail"] = (proc.stdout + proc.stderr)[-4000:]
            record["runs"].append(run)
            record["passes_in_a_row"] = i if proc.returncode == 0 else i - 1  # the series stops at its first failure
            write_json(args.out, record)
            print(f"run {i}: rc {proc.returncode} in {run['seconds']} s; {tail[0]}; retries {len(run['retries'])}", flush=True)
            if proc.returncode != 0:
                return 1
    finally:
        if burner is not None:
            burner.kill()
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
