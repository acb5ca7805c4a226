# Fifteenth session, call 4 (call 3's machine and compile cache, within 30 s of its end): the service at 1 and 64
# clients with execution compiled_graphs; device_passes from /v1/info after the run.
[ -d /tmp/site/ray ] || source .gpurun/setup.sh
export PYTHONPATH=/tmp/site:$PWD:$PWD/scripts RAY_USAGE_STATS_ENABLED=0 PATH=/tmp/site/bin:$PATH
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
CG='compile_options={"triton.cudagraphs": true}'
ray stop --force > /dev/null 2>&1; pkill -x haproxy
timeout 330 python3 scripts/bench_service.py --config configs/prod.yaml --model-id import:birefnet_random:build --photo-dir .photos \
  --set-model execution=compiled_graphs --set-model graph_batch_sizes=[1,8] --set-model compile_cache_dir=/tmp/cc --set-model "compile_options={}" \
  --ingress-proxy haproxy --ingress-replicas 12 --remover-replicas 1 --ready-timeout 150 --levels 1,64 --duration 30 --warmup 5 \
  --set-ingress device_jpeg_decode=when_idle --out $OUT/service.json > $OUT/service.log 2>&1; ph "service exit $?"
python3 -c "import json; r=json.load(open('$OUT/service.json')); print(r['ready_after_s'], r.get('startup')); print('model_after', {k: r.get('model_after', {}).get(k) for k in ('device_passes', 'batch_size_histogram')}); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','server_stage_mean_ms','gpu_busy_fraction','gpu_sm_clock_mhz','batch_size_histogram','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-1800
rm -rf /tmp/bench_service_*; ray stop --force > /dev/null 2>&1; pkill -x haproxy; ph done
