# Seventeenth session, call B (call A's machine, within 30 s of its end): model-only eager and compiled_graphs at
# batch 1 and 8 (the eager baseline and the b1 forward of the same lease, compiled buckets from call A's /tmp/cc), then
# the OOM split at 4x what fits (the sixteenth session's call4.sh from its `python3 -c` line on).
[ -d /tmp/site/ray ] || source .gpurun/setup.sh
export PYTHONPATH=/tmp/site:$PWD:$PWD/scripts RAY_USAGE_STATS_ENABLED=0 PATH=/tmp/site/bin:$PATH
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
ray stop --force > /dev/null 2>&1; pkill -x haproxy
timeout 240 python3 scripts/bench_model.py --in-ray-task configs/prod.yaml --model-id import:birefnet_random:build --precisions fp16 \
  --compile-cache-dir /tmp/cc --compile-options '{}' --modes eager,compiled_graphs --batch-sizes 1,8 \
  --inputs photos --photo-dir $PWD/.photos --iterations 20 --out $OUT/model.json > $OUT/model.log 2>&1; ph "model exit $?"
python3 -c "import json; [print(r['mode'], r['execution'], r['batch_size'], r['ms_per_batch'], r['images_per_s'], r.get('gpu_sm_clock_mhz'), r.get('compile_warmup')) for r in json.load(open('$OUT/model.json'))['results']]" 2>&1 | tail -6
ray stop --force > /dev/null 2>&1
sed -n '/^python3 -c "$/,$p' docs/benchmarks/2026-12-01-h200-sixteenth/call4.sh > /tmp/oom_part.sh
source /tmp/oom_part.sh
