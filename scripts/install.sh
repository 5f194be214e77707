#!/usr/bin/env bash
# Creates .venv (if missing) and installs lape_lib with the test and notebook extras.
# On a machine without torch this pulls torch from PyPI (a few GB; ~1 min from a local mirror).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "installed in ${SECONDS} s: $(.venv/bin/python -c 'import torch, lape_lib; print("torch", torch.__version__, "| lape_lib", lape_lib.__version__)')"
