# Thirteenth session, call 2 (call 1's machine, cache in /tmp/cc): the acceptance figures on this session's code in
# one run: model-only eager + compiled at batch 1 and 8 on the benchmark photos, then the service at 1 and 64 clients.
[ -d /tmp/site/ray ] || source .gpurun/setup.sh
export PYTHONPATH=/tmp/site:$PWD:$PWD/scripts RAY_USAGE_STATS_ENABLED=0 PATH=/tmp/site/bin:$PATH
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
CFG=${CFG:-configs/prod.yaml}
CG='compile_options={"triton.cudagraphs": true}'
ray stop --force > /dev/null 2>&1; pkill -x haproxy
timeout 330 python3 scripts/bench_model.py --in-ray-task configs/prod.yaml --model-id import:birefnet_random:build --precisions fp16 \
  --compile-cache-dir /tmp/cc --compile-options '{"triton.cudagraphs": true}' --modes eager,compiled --batch-sizes 1,8 \
  --inputs photos --photo-dir $PWD/.photos --iterations 30 --out $OUT/model.json > $OUT/model.log 2>&1; ph "model exit $?"
python3 -c "import json; [print(r['mode'], r['input'], r['batch_size'], r['ms_per_batch'], r['images_per_s'], r.get('gpu_sm_clock_mhz'), r.get('gpu_power_w')) for r in json.load(open('$OUT/model.json'))['results']]" 2>&1 | tail -8
ray stop --force > /dev/null 2>&1
timeout $((590-SECONDS)) python3 scripts/bench_service.py --config $CFG --model-id import:birefnet_random:build --photo-dir .photos \
  --set-model execution=compiled --set-model graph_batch_sizes=[1,8] --set-model compile_cache_dir=/tmp/cc --set-model "$CG" \
  --ingress-proxy haproxy --ingress-replicas 12 --remover-replicas 1 --ready-timeout 150 --levels 1,64 --duration 25 --warmup 5 \
  --set-ingress device_jpeg_decode=when_idle --out $OUT/service.json > $OUT/service.log 2>&1; ph "service exit $?"
python3 -c "import json; r=json.load(open('$OUT/service.json')); print(r['ready_after_s'], r.get('startup')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','server_stage_mean_ms','gpu_busy_fraction','gpu_sm_clock_mhz','batch_size_histogram','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-1500
rm -rf /tmp/bench_service_*; ray stop --force > /dev/null 2>&1; pkill -x haproxy; ph done
