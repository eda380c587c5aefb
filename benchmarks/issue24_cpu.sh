#!/bin/sh
# Issue 24's CPU rows on this machine (run it idle), into benchmarks/results/:
# the CPU (lscpu, flags) and load, the kernel's split threads against one
# thread on 1-8 rows, and kernel_isa's rows (kernel, scan, torch; % of peak)
# for batches 1-8 of the latency shape, DeepBench, the GRU, and with LARGE=1
# the large shape (minutes per call on 2 cores).
#     sh benchmarks/issue24_cpu.sh [TAG]        # TAG defaults to zen3
set -e
cd "$(dirname "$0")/.."
tag=${1:-zen3}
out=benchmarks/results
isa=$(python -c "from rnnscan.kernels import loader; print(loader.cpu_isa())")
{ lscpu; grep -m1 flags /proc/cpuinfo; uptime; git rev-parse HEAD; } > "$out/cpu_$tag.txt"
python benchmarks/kernel_split.py --batches 1,2,4,8 | tee "$out/kernel_split_$tag.jsonl"
python benchmarks/kernel_split.py --cell gru --batches 1,4 | tee -a "$out/kernel_split_$tag.jsonl"
python benchmarks/kernel_isa.py --isas "$isa" --rows 4,5,6,7,8,1 --name "kernel_isa_${tag}_latency"
python benchmarks/kernel_isa.py --isas "$isa" --rows 9 --rounds 5 --reps 2 --name "kernel_isa_${tag}_deepbench"
python benchmarks/kernel_isa.py --isas "$isa" --cell gru --rows 4,6,8,1,3 --name "kernel_isa_${tag}_gru"
python benchmarks/kernel_cputime.py 128 25 1024 1024 fwd 5 | tee "$out/kernel_cputime_$tag.txt"
python benchmarks/kernel_cputime.py 128 25 1024 1024 fwd+bwd 3 | tee -a "$out/kernel_cputime_$tag.txt"
if [ "${LARGE:-0}" = 1 ]; then
  python benchmarks/kernel_isa.py --isas "$isa" --rows 10 --rounds 3 --reps 1 --name "kernel_isa_${tag}_large"
fi
uptime >> "$out/cpu_$tag.txt"
