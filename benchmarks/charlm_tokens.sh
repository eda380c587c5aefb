#!/usr/bin/env bash
# `rnnscan train --task charlm` tokens/s of two source trees, runs alternating:
#   git worktree add /tmp/before 80a799a
#   bash benchmarks/charlm_tokens.sh /tmp/before . [rounds]
# Each run: 300 steps, a record every 50 (the first, with compilation, left out), no
# evaluations or checkpoints in between. Prefix XLA_FLAGS=--xla_cpu_max_isa=AVX2
# RNNSCAN_KERNEL_ISA=avx2 to emulate an AVX2 machine.
set -euo pipefail
before=$(cd "$1" && pwd) after=$(cd "$2" && pwd) rounds=${3:-2}
out=$(mktemp -d)
for _ in $(seq "$rounds"); do
  for tree in "$before" "$after"; do
    rm -rf "$out/run"
    # `python -m` imports rnnscan from the working directory, ahead of any install.
    (cd "$tree" && python -m rnnscan train --task charlm --steps 300 --log-every 50 \
      --eval-every 1000 --checkpoint-every 1000 --out "$out/run" > /dev/null)
    python - "$tree" "$out/run/metrics.jsonl" <<'PY'
import json, statistics, sys
rates = [r["tokens_per_s"] for r in map(json.loads, open(sys.argv[2])) if "tokens_per_s" in r]
print(f"{sys.argv[1]}: {statistics.median(rates[1:]):.0f} tokens/s")
PY
  done
done
rm -rf "$out"
