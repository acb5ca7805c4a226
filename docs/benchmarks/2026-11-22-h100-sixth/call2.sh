# session 6, call 2 (one run, part 2): restart the compiled service from call 1's cache (ready time), 64 clients
# then 1 client, sampling the ingress, model replica and proxy with py-spy at 64 clients; then the same with
# batch_wait_timeout_s 0 (the device queue merges groups; no wait at one client)
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
S="--config configs/prod.yaml --model-id import:birefnet_random:build --photo-dir .photos --set-model execution=compiled --set-model graph_batch_sizes=[1,8] --set-model compile_cache_dir=/tmp/cc --ingress-replicas 12 --remover-replicas 1 --ready-timeout 130"
show() { python3 -c "import json; r=json.load(open('$1')); print(r['ready_after_s'], r['model'].get('compile_warmup')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','server_stage_mean_ms','gpu_busy_fraction','batch_size_histogram')}) for l in r['levels']]" 2>&1 | cut -c1-1200; }
bash .gpurun/spy.sh 25 10 wait10ms &
timeout 270 python3 scripts/bench_service.py $S --levels 64,1 --duration 40 --warmup 10 --out $OUT/service_compiled.json > $OUT/service_compiled.log 2>&1; ph "service compiled exit $?"
show $OUT/service_compiled.json
cp /tmp/ray/session_latest/logs/serve/replica_*BackgroundRemover*.log $OUT/remover_compiled.log 2>/dev/null
sleep 3
timeout $((585-SECONDS)) python3 scripts/bench_service.py $S --batch-wait-s 0 --levels 64,1 --duration 40 --warmup 10 --out $OUT/service_compiled_wait0.json > $OUT/service_compiled_wait0.log 2>&1; ph "service wait0 exit $?"
show $OUT/service_compiled_wait0.json
