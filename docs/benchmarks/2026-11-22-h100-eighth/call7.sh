# session 8, call 7: the PNG encoder benchmark on the 16-core host again (the seventh session's raw files were lost),
# then compiled + inductor CUDA graphs with the capturable deform_conv2d: cold prebuild, the service at 1 and 64 clients
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
timeout 100 python3 scripts/bench_png.py --sizes 1500x1500,3000x2000 --threads 8 --out $OUT/png.json > $OUT/png.log 2>&1; ph "png exit $?"
cut -c1-200 $OUT/png.log
CG='compile_options={"triton.cudagraphs": true}'
timeout 250 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=import:birefnet_random:build \
  --set execution=compiled --set compile_cache_dir=/tmp/cc --set "graph_batch_sizes=[1, 8]" --set "$CG" > $OUT/prebuild.log 2>&1; ph "prebuild exit $?"
grep '^{' $OUT/prebuild.log | cut -c1-400
show() { python3 -c "import json; r=json.load(open('$1')); print(r['ready_after_s'], r['model'].get('execution'), r['model'].get('capturable_deform_conv'), r['model'].get('compile_warmup')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','mean_response_bytes','server_stage_mean_ms','gpu_busy_fraction','batch_size_histogram','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-1500; }
timeout $((588-SECONDS)) python3 scripts/bench_service.py --config configs/prod.yaml --model-id import:birefnet_random:build --photo-dir .photos \
  --set-model execution=compiled --set-model graph_batch_sizes=[1,8] --set-model compile_cache_dir=/tmp/cc --set-model "$CG" \
  --ingress-replicas 12 --remover-replicas 1 --ready-timeout 130 --levels 1,64 --duration 30 --warmup 8 --out $OUT/service_cg.json > $OUT/service_cg.log 2>&1; ph "service exit $?"
show $OUT/service_cg.json
