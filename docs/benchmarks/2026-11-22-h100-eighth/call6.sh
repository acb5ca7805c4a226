# session 8, call 6: this code on the compiled path (torchvision's deform kernel, no CUDA graphs): cold prebuild of
# buckets [1, 8], then the service from that cache at 1 and 64 clients, then 1 client again with png_threads 16
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
timeout 260 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=import:birefnet_random:build \
  --set execution=compiled --set compile_cache_dir=/tmp/cc --set "graph_batch_sizes=[1, 8]" > $OUT/prebuild.log 2>&1; ph "prebuild exit $?"
grep '^{' $OUT/prebuild.log | cut -c1-400
show() { python3 -c "import json; r=json.load(open('$1')); print(r['ready_after_s'], r['model'].get('execution'), r['model'].get('capturable_deform_conv'), r['model'].get('compile_warmup')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','mean_response_bytes','server_stage_mean_ms','gpu_busy_fraction','batch_size_histogram','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-1500; }
S="scripts/bench_service.py --config configs/prod.yaml --model-id import:birefnet_random:build --photo-dir .photos --set-model execution=compiled --set-model graph_batch_sizes=[1,8] --set-model compile_cache_dir=/tmp/cc --ingress-replicas 12 --remover-replicas 1 --ready-timeout 130"
timeout 230 python3 $S --levels 1,64 --duration 30 --warmup 8 --out $OUT/service_compiled.json > $OUT/service_compiled.log 2>&1; ph "service exit $?"
show $OUT/service_compiled.json
timeout $((585-SECONDS)) python3 $S --set-ingress png_threads=16 --levels 1 --duration 30 --warmup 8 --out $OUT/service_compiled_png16.json > $OUT/service_compiled_png16.log 2>&1; ph "service png16 exit $?"
show $OUT/service_compiled_png16.json
