# Seventeenth session, call E (a fresh machine, the session's last device minutes): the naive baseline on an H200
# (bench_naive.py: Pillow resize, batch 1, fp32, Pillow PNG level 6; until now measured on an H100 only), then the
# aot_compile probe with every guard left out (aot_probe2.py): save at batch 1, load in a fresh process.
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 110 python3 scripts/bench_naive.py --model-id import:birefnet_random:build --photos 12 --photo-dir .photos --out $OUT/naive.json > $OUT/naive.log 2>&1; ph "naive exit $?"
python3 -c "import json; r=json.load(open('$OUT/naive.json')); print({k: v for k, v in r.items() if k not in ('per_image',)})" 2>&1 | cut -c1-900
TORCHINDUCTOR_CACHE_DIR=/tmp/ind_e1 timeout 200 python3 docs/benchmarks/2026-12-02-h200-seventeenth/aot_probe2.py save 1 import:birefnet_random:build > $OUT/aot2.log 2>&1; ph "aot save exit $?"
TORCHINDUCTOR_CACHE_DIR=/tmp/ind_e2 timeout 120 python3 docs/benchmarks/2026-12-02-h200-seventeenth/aot_probe2.py load 1 import:birefnet_random:build >> $OUT/aot2.log 2>&1; ph "aot load exit $?"
grep -v "^\s*$" $OUT/aot2.log | grep -v -i "warn\|Loading weights" | tail -14 | cut -c1-300
