# session 8, call 8: accuracy of compiled + inductor CUDA graphs with the capturable deform_conv2d (bucket 8, cold)
# against eager fp32 on 50 real photos
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
timeout 500 python3 scripts/check_accuracy.py --model-id import:birefnet_random:build --photo-dir .photos --photos 50 \
  --candidates compiled:fp16 --batch-size 8 --compile-cache-dir /tmp/cc --compile-options '{"triton.cudagraphs": true}' \
  --out $OUT/accuracy_cg.json > $OUT/accuracy_cg.log 2>&1; ph "accuracy exit $?"
grep "^{" $OUT/accuracy_cg.log | cut -c1-400; tail -3 $OUT/accuracy_cg.log | cut -c1-300
