#!/usr/bin/env bash
# What a lent GPU runs, first thing, as ONE device command (device tool: timeout_s about 560, then give_back).
#
# Here, once per checkout: copy the CIFAR-10 archive into the ignored data/ folder
#   mkdir -p data && cp ../shared/data/cifar10-jpeg.tar.xz data/
# then call the device tool's run with carry ["data/cifar10-jpeg.tar.xz"] and the command
#   bash scripts/gpu_session.sh agenda
# and commit what $OUT brought back under results/gpu/<date>/ (see README, "A lent GPU").
#
#   bash scripts/gpu_session.sh agenda [gpu_agenda.py options]   # the one-shot agenda (scripts/gpu_agenda.py):
#       environment, every training mode checked against eager, throughput against the reference loop,
#       the notebooks on CUDA (and as a T4), the scale-controls study with the time left; under one deadline
#       (AGENDA_DEADLINE_S, default 500 s), every file in $OUT rewritten as it grows
#   bash scripts/gpu_session.sh train NAME ARGS                  # python -m lape_lib.train ARGS into runs/NAME,
#       ending on a checkpoint before LIMIT_MINUTES (8.5); results.json mirrored to $OUT
#
# The device has its own Python 3.12 and torch and no network: nothing is installed there; lape_lib is
# imported from this checkout (PYTHONPATH). No `set -e` across the agenda's phases: it handles each itself.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 LAPE_DATA="${LAPE_DATA:-$PWD/data}"
py=${PYTHON:-python3}
out=${OUT:-runs/gpu_out}
mkdir -p "$out"
case "${1:-}" in
  agenda)
    shift
    deadline=${AGENDA_DEADLINE_S:-500}
    # The agenda keeps its own deadline; this outer one only stops a hung interpreter, 30 s later.
    timeout -k 5 $((deadline + 30)) "$py" scripts/gpu_agenda.py --out "$out" --deadline-s "$deadline" "$@"
    ;;
  train)
    [ $# -ge 2 ] || { echo "usage: bash scripts/gpu_session.sh train NAME [lape_lib.train options]" >&2; exit 2; }
    name=$2
    shift 2
    LAPE_NO_PROGRESS=1 "$py" -m lape_lib.train "$@" --save-weights --time-limit-minutes "${LIMIT_MINUTES:-8.5}" --out "runs/$name" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do  # a kill at the limit still leaves the last epoch's results
      [ -f "runs/$name/results.json" ] && cp "runs/$name/results.json" "$out/.$name-results.json" && mv "$out/.$name-results.json" "$out/$name-results.json"
      sleep 5
    done
    wait "$pid"; rc=$?
    cp "runs/$name/results.json" "$out/$name-results.json" 2>/dev/null
    for f in "runs/$name"/*-s0.safetensors; do [ -f "$f" ] && cp "$f" "$out/$(basename "${f//@/-std}")"; done
    exit $rc
    ;;
  *)
    echo "usage: bash scripts/gpu_session.sh agenda [options] | train NAME [lape_lib.train options]" >&2
    exit 2
    ;;
esac
