#!/usr/bin/env bash
# One prepared GPU script: the training-step benchmark in fp32, tf32 and bf16 (eager and replayed as a
# CUDA graph), the scaling benchmark, a graphed-against-eager training check, and a 100-epoch
# AWA1-shaped surrogate training per precision (CUDA graphs on, both classifiers scored at the end),
# and 3 seeds of it trained together against one alone (benchmarks/together.py), everything written to
# one folder. Meant to finish in under 11 minutes on one H100 (the together part alone: about 3).
#
#   bash benchmarks/gpu.sh [OUT_DIR]          # on a GPU machine (after `make setup`, or PYTHON=python3)
#   TINY=1 bash benchmarks/gpu.sh /tmp/out    # CPU smoke test with tiny sizes
#   PARTS="step train" BLOCKS=5 bash benchmarks/gpu.sh OUT   # a subset: step scaling parity train together
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu}
PY=${PYTHON:-.venv/bin/python}
PRECISIONS=${PRECISIONS:-fp32 tf32 bf16}
PARTS=${PARTS:-step scaling parity train together}
BLOCKS=${BLOCKS:-5 10}
DATA=${DATA:-$OUT/data}  # the AWA1-shaped surrogate (about 250 MB); removed at the end unless DATA is given
LOG=${LOG:-$OUT/log.txt}  # scripts/submit_gpu_benchmarks.py gives each part, one GPU job each, its own LOG and DATA
has() { [[ " $PARTS " == *" $1 "* ]]; }
for part in $PARTS; do
  case "$part" in
    step|scaling|parity|train|together) ;;
    *) echo "gpu.sh: unknown part '$part' in PARTS; choose from: step scaling parity train together" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT"
if [ "${TINY:-0}" = "1" ]; then
  STEP_ARGS=(--dim 64 --d-a 8 --hidden 32 --batch 32 --steps 2 --warmup 1)
  BLOCKS=2
  SCALE_ARGS=(--dim 32 --d-a 8 --hidden 16 --samples 64 128 --classes 10 20 --dims 16 32 --test-samples 64 --steps 1)
  SYN_ARGS=(--scale 0.01 --dim 128)
  TRAIN_ARGS=(--epochs 2 --config "$OUT/tiny_config.json")
  PARITY_EPOCHS=1
  TOGETHER_ARGS=(--epochs 2 --config "$OUT/tiny_config.json")
  echo '{"hidden": 32, "softmax_steps": 20}' > "$OUT/tiny_config.json"
else
  STEP_ARGS=(--steps 20 --warmup 5)
  SCALE_ARGS=(--dim 2048 --hidden 1024 --samples 4096 8192 16384 32768 --classes 10 100 1000 10000
              --dims 256 512 1024 2048 --test-samples 8192 --steps 5)
  SYN_ARGS=()
  TRAIN_ARGS=(--epochs 100 --checkpoint-every 25)
  PARITY_EPOCHS=5
  TOGETHER_ARGS=(--epochs 100)
fi
{
  echo "started $(date -u +%FT%TZ)"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
  if has step; then
    # shellcheck disable=SC2086
    $PY benchmarks/train_step.py --device auto "${STEP_ARGS[@]}" --blocks $BLOCKS --precisions $PRECISIONS \
        --out "$OUT/train_step.json"
  fi
  if has scaling; then
    $PY benchmarks/scaling.py --device auto "${SCALE_ARGS[@]}" --out "$OUT/scaling.json"
  fi
  if { has parity || has train || has together; } && [ ! -f "$DATA/SYN_AWA1/res101.mat" ]; then
    $PY -m izf_lib prepare synthetic --like AWA1 --out "$DATA" "${SYN_ARGS[@]}"  # AWA1's real (bundled) attributes
  fi
  if has parity; then
    $PY benchmarks/graph_parity.py --dataset SYN_AWA1 --data-dir "$DATA" --epochs "$PARITY_EPOCHS" \
        --out "$OUT/graph_parity.json"
    # the same comparison between two eager runs: how far GPU non-determinism alone moves training
    $PY benchmarks/graph_parity.py --dataset SYN_AWA1 --data-dir "$DATA" --epochs "$PARITY_EPOCHS" --modes off off \
        --out "$OUT/eager_parity.json"
  fi
  if has train; then
    for precision in $PRECISIONS; do
      start=$(date +%s)
      $PY -m izf_lib train --dataset SYN_AWA1 --data-dir "$DATA" --out "$OUT/awa1_$precision" --device auto \
          --classifier both --quiet --eval-every 0 --precision "$precision" "${TRAIN_ARGS[@]}" > /dev/null
      echo "awa1 surrogate, $precision: wall seconds $(( $(date +%s) - start ))"
      rm -f "$OUT/awa1_$precision/checkpoint.pt"
    done
  fi
  if has together; then
    $PY benchmarks/together.py --dataset SYN_AWA1 --data-dir "$DATA" --seeds 3 "${TOGETHER_ARGS[@]}" \
        --out "$OUT/together.json"
  fi
  if [ "$DATA" = "$OUT/data" ] || [ "${CLEAN_DATA:-0}" = "1" ]; then rm -rf "$DATA"; fi
  echo "finished $(date -u +%FT%TZ)"
} 2>&1 | tee "$LOG"
