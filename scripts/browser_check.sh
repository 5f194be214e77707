#!/usr/bin/env bash
# Opens an executed notebook in JupyterLab, headless, in Debian's Chromium; takes a screenshot
# and checks that the rendered figure is on the page.
#
#   bash scripts/browser_check.sh [runs/workbook/03_per_layer_pe.ipynb] [docs/browser-03.png]
#
# Needs: the project venv (scripts/install.sh), `pip install jupyterlab` into it, and
# `apt-get install chromium`. Run the workbook first (README's main command) so that the
# notebook has outputs. Everything stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
notebook=${1:-runs/workbook/03_per_layer_pe.ipynb}
shot=${2:-docs/browser-03.png}
[ -f "$notebook" ] || { echo "no $notebook: run the workbook first (README's main command)" >&2; exit 1; }
command -v chromium >/dev/null || { echo "chromium not found: apt-get install chromium" >&2; exit 1; }
.venv/bin/python -c "import jupyterlab" 2>/dev/null || { echo "jupyterlab not installed: .venv/bin/pip install jupyterlab" >&2; exit 1; }

root=$(cd "$(dirname "$notebook")" && pwd)
port=${PORT:-8899}
token=lape-browser-check
profile=$(mktemp -d)
log=$(mktemp)
.venv/bin/python -m jupyterlab --no-browser --ip=127.0.0.1 --port="$port" --allow-root --IdentityProvider.token="$token" \
  --ServerApp.root_dir="$root" --LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
  >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$profile" "$log"' EXIT
for _ in $(seq 60); do
  curl -sf "http://127.0.0.1:$port/api/status?token=$token" >/dev/null && break
  sleep 1
done
url="http://127.0.0.1:$port/lab/tree/$(basename "$notebook")?token=$token&reset"
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --user-data-dir="$profile" --window-size=1400,1800
       --virtual-time-budget=30000 --run-all-compositor-stages-before-draw)
mkdir -p "$(dirname "$shot")"
chromium "${flags[@]}" --screenshot="$shot" "$url" 2>/dev/null
dom=$(chromium "${flags[@]}" --dump-dom "$url" 2>/dev/null)
figures=$(grep -o "jp-RenderedImage" <<<"$dom" | wc -l || true)
echo "screenshot: $shot"
echo "rendered figures on the page: $figures"
[ "$figures" -gt 0 ] || { echo "FAIL: no rendered figure found in the page" >&2; exit 1; }
echo "OK"
