# session 8, call 1: inductor CUDA graphs (compile_options triton.cudagraphs) on the compiled path, now run on one
# thread of their own: cold prebuild of buckets [1, 8], model-only from the cache, then the service from the
# cache with the striped PNG encoder at 1 and 64 clients
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
CG='compile_options={"triton.cudagraphs": true}'
timeout 260 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=import:birefnet_random:build \
  --set execution=compiled --set compile_cache_dir=/tmp/cc --set "graph_batch_sizes=[1, 8]" --set "$CG" > $OUT/prebuild.log 2>&1; ph "prebuild exit $?"
grep '^{' $OUT/prebuild.log | cut -c1-400; tail -3 $OUT/prebuild.log | cut -c1-300
timeout 90 python3 scripts/bench_model.py --model-id import:birefnet_random:build --precisions fp16 --compile-cache-dir /tmp/cc \
  --compile-options '{"triton.cudagraphs": true}' --modes compiled --batch-sizes 1,8 --iterations 20 --out $OUT/model_cg.json > $OUT/model_cg.log 2>&1; ph "model exit $?"
grep "^{" $OUT/model_cg.log | cut -c1-400; tail -2 $OUT/model_cg.log | cut -c1-300
show() { python3 -c "import json; r=json.load(open('$1')); print(r['ready_after_s'], r['model'].get('compile_warmup'), r['model'].get('batching')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','mean_response_bytes','server_stage_mean_ms','gpu_busy_fraction','batch_size_histogram','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-1500; }
timeout $((585-SECONDS)) python3 scripts/bench_service.py --config configs/prod.yaml --model-id import:birefnet_random:build --photo-dir .photos \
  --set-model execution=compiled --set-model graph_batch_sizes=[1,8] --set-model compile_cache_dir=/tmp/cc --set-model "$CG" \
  --ingress-replicas 12 --remover-replicas 1 --ready-timeout 150 --levels 1,64 --duration 30 --warmup 8 --out $OUT/service_cg.json > $OUT/service_cg.log 2>&1; ph "service exit $?"
show $OUT/service_cg.json
grep -i "error\|Traceback" /tmp/bench_service_*/serve.log 2>/dev/null | head -5
tail -c 300000 /tmp/bench_service_*/serve.log > $OUT/service_cg_serve.log 2>/dev/null
