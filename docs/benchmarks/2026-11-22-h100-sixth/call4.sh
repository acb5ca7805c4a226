# session 6, call 4 (one run): RGBX decode (no strided compose copy) and batch_wait_timeout_s 0 (new default):
# cold compile (prebuild buckets 1 and 8 + plain b8), model-only compiled b1/b8 and eager b8, then the compiled
# service from the prebuild cache at 64 clients and 1 client, with py-spy on the ingress at 64 clients
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
M="--model-id import:birefnet_random:build --precisions fp16 --compile-cache-dir /tmp/cc"
P="--config configs/prod.yaml --set model_id=import:birefnet_random:build --set execution=compiled --set compile_cache_dir=/tmp/cc"
( timeout 330 python3 -m serve_app.prebuild --address local $P --set "graph_batch_sizes=[1, 8]" > $OUT/prebuild.log 2>&1; ph "prebuild exit $?" ) &
( timeout 330 python3 scripts/bench_model.py $M --modes compiled --batch-sizes 8 --iterations 3 --out /tmp/cold_b8.json > $OUT/cold_b8.log 2>&1; ph "plain compile b8 exit $?" ) &
wait
grep '^{' $OUT/prebuild.log | cut -c1-300
timeout 90 python3 scripts/bench_model.py $M --modes compiled,eager --batch-sizes 8 --iterations 20 --out $OUT/model.json > $OUT/model.log 2>&1; ph "model exit $?"
grep "^{" $OUT/model.log | cut -c1-330
show() { python3 -c "import json; r=json.load(open('$1')); print(r['ready_after_s'], r['model'].get('compile_warmup'), r['model'].get('batching')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','server_stage_mean_ms','gpu_busy_fraction','batch_size_histogram','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-1500; }
bash .gpurun/spy.sh 25 10 rgbx &
timeout $((590-SECONDS)) python3 scripts/bench_service.py --config configs/prod.yaml --model-id import:birefnet_random:build --photo-dir .photos \
  --set-model execution=compiled --set-model graph_batch_sizes=[1,8] --set-model compile_cache_dir=/tmp/cc --ingress-replicas 12 --remover-replicas 1 \
  --ready-timeout 130 --levels 64,1 --duration 40 --warmup 10 --out $OUT/service_compiled.json > $OUT/service_compiled.log 2>&1; ph "service exit $?"
show $OUT/service_compiled.json
