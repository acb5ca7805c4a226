# session 8, call 2 (same machine as call 1, its /tmp/cc cache): accuracy of compiled + inductor CUDA graphs against
# eager fp32 on 50 real photos, then model-only timing of the same from the cache
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
timeout 280 python3 scripts/check_accuracy.py --model-id import:birefnet_random:build --photo-dir .photos --photos 50 \
  --candidates compiled:fp16 --batch-size 8 --compile-cache-dir /tmp/cc --compile-options '{"triton.cudagraphs": true}' \
  --out $OUT/accuracy_cg.json > $OUT/accuracy_cg.log 2>&1; ph "accuracy exit $?"
tail -c 1500 $OUT/accuracy_cg.log
timeout $((585-SECONDS)) python3 scripts/bench_model.py --model-id import:birefnet_random:build --precisions fp16 --compile-cache-dir /tmp/cc \
  --compile-options '{"triton.cudagraphs": true}' --modes compiled,eager --batch-sizes 1,8 --iterations 20 --out $OUT/model_cg.json > $OUT/model_cg.log 2>&1; ph "model exit $?"
grep "^{" $OUT/model_cg.log | cut -c1-400; tail -2 $OUT/model_cg.log | cut -c1-300
