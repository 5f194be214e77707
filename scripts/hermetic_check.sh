#!/usr/bin/env bash
# The test suite as a new contributor's fresh machine runs it: a clone of this checkout's HEAD with
# no ../shared beside it (so no CIFAR copy: smoke mode reads its labelled stand-in), an empty
# decoded-image cache, no $LAPE_DATA, and no network (a network namespace of its own where
# `unshare -n` works, else the Hub's offline switch alone). Uses this checkout's .venv; the clone's
# lape_lib comes first on PYTHONPATH, the notebooks' kernels included.
#   bash scripts/hermetic_check.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
py="$repo/.venv/bin/python"
[ -x "$py" ] || { echo "hermetic check: no .venv here; run bash scripts/install.sh first" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone -q "$repo" "$tmp/lape"
[ ! -e "$tmp/shared" ] || { echo "hermetic check: $tmp/shared exists" >&2; exit 2; }
isolate=()
# A network namespace of its own has only a loopback, and that one down: bring it up (JupyterLab,
# the browser test and torchrun talk over 127.0.0.1), then nothing else is reachable.
if command -v ip >/dev/null && unshare -n sh -c 'ip link set lo up' 2>/dev/null; then
  isolate=(unshare -n sh -c 'ip link set lo up && exec "$@"' sh)
  echo "hermetic check: a clone at $tmp/lape, no ../shared, no network (its own network namespace, loopback only)"
else
  echo "hermetic check: a clone at $tmp/lape, no ../shared; no network namespace can be made here, so only HF_HUB_OFFLINE=1 keeps it offline"
fi
cd "$tmp/lape"
env -u LAPE_DATA PYTHONPATH="$tmp/lape" HF_HUB_OFFLINE=1 LAPE_CACHE="$tmp/cache" PYTHONUNBUFFERED=1 \
  "${isolate[@]}" "$py" -m pytest -p no:cacheprovider "$@"
