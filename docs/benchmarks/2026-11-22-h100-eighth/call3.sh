# session 8, call 3: is the CUDA-graph path exact? a probe of deform_conv2d and masked SDPA under graph replay, then
# accuracy of execution cuda_graphs (the prod.yaml default) and eager fp16 against eager fp32 on 50 real photos
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
timeout 200 python3 docs/benchmarks/2026-11-22-h100-eighth/call3_probe.py > $OUT/dcprobe.log 2>&1; ph "probe exit $?"
grep -v Warning $OUT/dcprobe.log | tail -20 | cut -c1-300
timeout 300 python3 scripts/check_accuracy.py --model-id import:birefnet_random:build --photo-dir .photos --photos 50 \
  --candidates cuda_graphs:fp16,eager:fp16 --batch-size 8 --out $OUT/accuracy_graphs.json > $OUT/accuracy_graphs.log 2>&1; ph "accuracy exit $?"
grep "^{" $OUT/accuracy_graphs.log | cut -c1-400; tail -3 $OUT/accuracy_graphs.log | cut -c1-300
