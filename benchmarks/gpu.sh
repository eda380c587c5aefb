#!/usr/bin/env bash
# The benchmark matrix on a lent GPU, within 8 minutes, results under $OUT.
#
# Run from the repository root on a machine whose jax has CUDA and that has torch
# and flax (nothing is installed). First checks rnnscan against the plain
# reference and against torch's cuDNN on the GPU, and stops if they disagree.
# Then times sequence parallelism and an exported module, and runs the configs in groups, each in its own process under a timeout (a
# crash or a hang loses only its group), most important first, and merges what
# finished into $OUT/gpu.{json,md,png}. Exits non-zero if any group failed.
# The device tool returns at most 8 files from $OUT: each group's own files go to
# a scratch folder and come back together in $OUT/gpu-groups.tar.gz.
#
#   OUT=/tmp/out bash benchmarks/gpu.sh
#   OUT=/tmp/out TINY=1 bash benchmarks/gpu.sh   # smoke test of this script (any machine;
#                                                 tests/test_gpu_script.py runs it)
set -euo pipefail
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# JAX and torch share the GPU: no preallocation of most of its memory by JAX.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
: "${OUT:?set OUT to the results directory}"
mkdir -p "$OUT"
WORK=$(mktemp -d)
BUDGET=${BUDGET:-480}   # seconds for the whole script
FAILED=()

{ nvidia-smi || true; python -c 'import jax; print(jax.devices())'; } 2>&1 | tee "$OUT/machine.txt"

echo "== correctness: rnnscan vs the plain scan and torch, on the GPU"
check_limit=150
if [[ -n "${TINY:-}" ]]; then check_limit=600; fi  # TINY: any machine, maybe a loaded CPU
timeout "$check_limit" python -m rnnscan.bench.check 2>&1 | tee "$OUT/check.txt"

# group NAME ARGS...: one harness run, timed out before the budget ends.
group() {
  local name=$1; shift
  local left=$((BUDGET - SECONDS - 25))
  if ((left < 40)); then
    echo "== $name: skipped, ${left}s left"; FAILED+=("$name (no time)"); return
  fi
  echo "== $name ($left s left)"
  if [[ -n "${TINY:-}" ]]; then set -- "$@" --configs tiny --rounds 1 --reps 2; fi
  timeout "$left" python -m rnnscan.bench --out "$WORK" --name "gpu-$name" \
      --rounds 5 --reps 10 --case-budget 3 --deadline $((left - 40)) "$@" \
    || { echo "== $name: failed or timed out (rc=$?)"; FAILED+=("$name"); }
}

# Sequence parallelism over every local device (on one GPU: the machinery's
# overhead) and the exported module (jax.export round trip of an rs.unroll LSTM):
# tables on stdout, JSON in the groups' tarball. First and capped, so that they fit.
extra() {
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET - SECONDS - 25))
  if ((left < 40)); then echo "== $name: skipped, ${left}s left"; FAILED+=("$name (no time)"); return; fi
  echo "== $name ($left s left)"
  timeout $((left < cap ? left : cap)) python "$@" \
    || { echo "== $name: failed or timed out (rc=$?)"; FAILED+=("$name"); }
}
if [[ -n "${TINY:-}" ]]; then
  extra sequence_parallel 90 benchmarks/sequence_parallel.py --time 64 --batch 2 --features 4 --reps 1 \
    --out "$WORK/extra-sequence_parallel.json"
  extra export 45 benchmarks/export_roundtrip.py --time 16 --batch 2 --hidden 8 --reps 1 \
    --out "$WORK/extra-export.json"
else
  extra sequence_parallel 90 benchmarks/sequence_parallel.py --out "$WORK/extra-sequence_parallel.json"
  extra export 45 benchmarks/export_roundtrip.py --out "$WORK/extra-export.json"
fi

group headline --configs small,medium,latency
group matmul --configs large,deepbench
group more --configs gru_medium,lstm4_medium,long
group bf16 --configs medium,large --dtype bfloat16 --peers rnnscan,torch,flax,plain_scan
# Sequential vs associative scan for the linear cells: sets AUTO_MIN_TIME["gpu"].
left=$((BUDGET - SECONDS - 25))
if ((left >= 60)); then
  echo "== linear: sequential vs associative ($left s left)"
  linear_args=(--out "$OUT" --repeats 3)
  if [[ -n "${TINY:-}" ]]; then linear_args+=(--lengths 64 --hidden 16 --repeats 1); fi
  timeout $((left < 150 ? left : 150)) python benchmarks/linear_scan.py "${linear_args[@]}" \
    || { echo "== linear: failed or timed out (rc=$?)"; FAILED+=("linear"); }
else
  echo "== linear: skipped, ${left}s left"; FAILED+=("linear (no time)")
fi
group memory --configs medium --modes train --memory --rounds 1 --reps 3 \
  --peers rnnscan,torch,flax,jax_cudnn
# method="newton" against the sequential scan: iterations and time, T = 1024 and 16384.
left=$((BUDGET - SECONDS - 25))
if ((left >= 60)); then
  echo "== newton ($left s left)"
  newton_args=(--quick --out "$WORK/gpu-newton")
  if [[ -n "${TINY:-}" ]]; then newton_args=(--times 32 --cells paragru --reps 1 --out "$WORK/gpu-newton"); fi
  timeout $((left < 200 ? left : 200)) python benchmarks/newton.py "${newton_args[@]}" \
    || { echo "== newton: failed or timed out (rc=$?)"; FAILED+=("newton"); }
else
  echo "== newton: skipped, ${left}s left"; FAILED+=("newton (no time)")
fi

shopt -s nullglob
results=("$WORK"/gpu-[!n]*.json)  # the harness runs; newton has its own table
if ((${#results[@]})); then
  python -m rnnscan.bench --report "${results[@]}" --out "$OUT" --name gpu
  cat "$OUT/gpu.md"
  tar czf "$OUT/gpu-groups.tar.gz" -C "$WORK" .
fi
if ((${#FAILED[@]})); then
  echo "groups that did not finish: ${FAILED[*]}"
  exit 1
fi
