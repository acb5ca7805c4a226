# session 8, call 4: the capturable deform_conv2d. Cold prebuild of compiled + triton.cudagraphs in the background;
# meanwhile a probe (exactness under replay, time against torchvision) and accuracy of cuda_graphs vs eager fp32;
# then model-only timing of eager, cuda_graphs and compiled + triton.cudagraphs (from the cache)
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
CG='compile_options={"triton.cudagraphs": true}'
( timeout 300 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=import:birefnet_random:build \
  --set execution=compiled --set compile_cache_dir=/tmp/cc --set "graph_batch_sizes=[1, 8]" --set "$CG" > $OUT/prebuild.log 2>&1; ph "prebuild exit $?" ) &
timeout 120 python3 docs/benchmarks/2026-11-22-h100-eighth/call4_probe.py > $OUT/dcprobe2.log 2>&1; ph "probe exit $?"
grep -v Warn $OUT/dcprobe2.log | tail -16 | cut -c1-300
timeout 200 python3 scripts/check_accuracy.py --model-id import:birefnet_random:build --photo-dir .photos --photos 50 \
  --candidates cuda_graphs:fp16 --batch-size 8 --out $OUT/accuracy_graphs.json > $OUT/accuracy_graphs.log 2>&1; ph "accuracy exit $?"
grep "^{" $OUT/accuracy_graphs.log | cut -c1-400; tail -2 $OUT/accuracy_graphs.log | cut -c1-300
wait
grep '^{' $OUT/prebuild.log | cut -c1-400
timeout $((580-SECONDS)) python3 scripts/bench_model.py --model-id import:birefnet_random:build --precisions fp16 --compile-cache-dir /tmp/cc \
  --compile-options '{"triton.cudagraphs": true}' --modes compiled,cuda_graphs,eager --batch-sizes 1,8 --iterations 20 --out $OUT/model.json > $OUT/model.log 2>&1; ph "model exit $?"
grep "^{" $OUT/model.log | cut -c1-400; tail -2 $OUT/model.log | cut -c1-300
