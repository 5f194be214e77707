#!/usr/bin/env bash
# The workbook in a real browser: JupyterLab under headless Chromium (Debian's package, driven by
# Playwright from PyPI through executable_path), every notebook run with "Run All" in smoke mode and
# checked (every cell run once in order, no error output, figures that decode, formulas typeset,
# notebook 03's sliders changing its figure), each check proved on a copy broken on purpose
# (tests/test_browser.py, part of the test suite). Screenshots of failures are kept under runs/browser/.
#
#   bash scripts/browser_check.sh
#
# Needs the project venv (scripts/install.sh) and `apt-get install chromium`. Everything stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { echo "chromium not found: apt-get install chromium" >&2; exit 1; }
rm -rf runs/browser
.venv/bin/python -m pytest -q -p no:cacheprovider tests/test_browser.py --basetemp=runs/browser
echo "screenshots: $(find runs/browser -name '*.png' | sort | tr '\n' ' ')"
