# session 9, call 3 (same machine as call 2): model-only eager fp16 and compiled + triton.cudagraphs at batch 1 and 8
# on the H200 (compiled compiles cold here: bench_model misses the prebuild's cache, see the eighth session)
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
timeout 440 python3 scripts/bench_model.py --model-id import:birefnet_random:build --precisions fp16 --compile-cache-dir /tmp/cc \
  --compile-options '{"triton.cudagraphs": true}' --modes eager,compiled --batch-sizes 1,8 --iterations 20 --out $OUT/model.json > $OUT/model.log 2>&1; ph "model exit $?"
grep "^{" $OUT/model.log | cut -c1-400; tail -3 $OUT/model.log | cut -c1-300
