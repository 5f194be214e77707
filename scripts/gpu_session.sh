#!/usr/bin/env bash
# The GPU work the open issues need, each step inside one 10-minute device command. Run it on the
# GPU machine from the repository root, with the CIFAR-10 archive in device_data/ (here, once:
# mkdir -p device_data && cp ../shared/data/cifar10-jpeg.tar.xz device_data/ && echo /device_data/ >> .git/info/exclude;
# then name device_data in the call's carry):
#
#   bash scripts/gpu_session.sh bench            # training images/s (issue 3), DeiT-Ti device-hours (issue 6),
#                                                # augmentation images/s: merged into $OUT/benchmarks.json, augment.json
#   bash scripts/gpu_session.sh train NAME ARGS  # python -m lape_lib.train ARGS into runs/NAME, ending on a checkpoint
#                                                # before 9 minutes; call it again while the machine is warm to resume
#   bash scripts/gpu_session.sh controls         # issue 13 at the recipe: add, add@1.0 (scale-matched) and lape,
#                                                # seeds 0-2, CIFAR-10, full augmentation, EPOCHS epochs (default 30:
#                                                # the recipe's schedule shortened to fit one loan; mixup/cutmix off
#                                                # after 175/300 of it); one train call, then the multi-arm report
#
# Each step leaves what it measured in $OUT (a train step: results.json, and a finished run's
# seed-0 safetensors). runs/ lives only as long as the machine stays warm: a run must finish
# inside one lease (a 6-arm checkpoint is ~270 MB, too big to come back through $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 LAPE_DATA="${LAPE_DATA:-$PWD/device_data}"
py=${PYTHON:-python3}
out=${OUT:-runs/gpu_out}
mkdir -p "$out"
case "${1:-}" in
  bench)
    cp results/benchmarks.json results/augment.json "$out/"  # the GPU rows join the committed CPU rows
    b=("$py" benchmarks/throughput.py --out "$out/benchmarks.json")
    cg=(--compile --compile-mode reduce-overhead)
    "${b[@]}" --steps 100
    "${b[@]}" --steps 100 --no-reference "${cg[@]}"
    "$py" benchmarks/augment.py --out "$out/augment.json"
    "${b[@]}" --steps 50 --no-reference --n-models 6 "${cg[@]}"
    "${b[@]}" --steps 50 --no-reference --n-models 3 --stack-seeds "${cg[@]}"
    "${b[@]}" --steps 30 --no-reference --model timm/deit_tiny_patch16_224 --img-size 224 --num-classes 1000 \
      --batch-size 256 --compile
    # The whole step as one CUDA graph: never run on a GPU before, so a failure here is reported, not fatal.
    for extra in "--n-models 1" "--n-models 6" "--n-models 3 --stack-seeds"; do
      # shellcheck disable=SC2086
      "${b[@]}" --steps 100 --no-reference --cuda-graph $extra || echo "cuda-graph row ($extra) failed"
    done
    ;;
  train)
    [ $# -ge 2 ] || { echo "usage: bash scripts/gpu_session.sh train NAME [lape_lib.train options]" >&2; exit 2; }
    name=$2
    shift 2
    "$py" -m lape_lib.train "$@" --save-weights --no-progress --time-limit-minutes "${LIMIT_MINUTES:-8.5}" --out "runs/$name"
    cp "runs/$name/results.json" "$out/$name-results.json"
    cp "runs/$name"/*-s0.safetensors "$out/" 2>/dev/null || true  # written when the run is done
    ;;
  controls)
    epochs=${EPOCHS:-30}
    bash "$0" train "controls_c10_e$epochs" --model vit_lite_7_4 --joins add add@1.0 lape --seeds 0 1 2 \
      --epochs "$epochs" --warmup-epochs $((epochs / 30 > 0 ? epochs / 30 : 1)) --cooldown-epochs 0 \
      --mix-off-epoch $((epochs * 175 / 300)) --compile
    "$py" -m lape_lib.report "$out/controls_c10_e$epochs-results.json" --allow-unfinished \
      --out "$out/controls_c10_e$epochs-summary.json"
    ;;
  *)
    echo "usage: bash scripts/gpu_session.sh bench | train NAME [lape_lib.train options] | controls" >&2
    exit 2
    ;;
esac
echo "written to $out: $(ls "$out" | tr '\n' ' ')"
