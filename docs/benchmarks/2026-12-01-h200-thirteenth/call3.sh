# Thirteenth session, call 1 (fresh machine): prebuild, then the service at one client with the remover's model thread
# merged into the compiled forward's thread (V1), then V1 + the model deployment's access log off + the ingress's user
# code and router on the replica's own event loop (V2, a derived config). Twelfth/thirteenth baseline: 47.6-48.8 ms p50.
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
CG='compile_options={"triton.cudagraphs": true}'
timeout 260 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=import:birefnet_random:build \
  --set execution=compiled --set compile_cache_dir=/tmp/cc --set "graph_batch_sizes=[1, 8]" --set "$CG" > $OUT/prebuild.log 2>&1; ph "prebuild exit $?"
grep '^{' $OUT/prebuild.log | cut -c1-300
ray stop --force > /dev/null 2>&1
python3 - <<'PY'
import yaml
c = yaml.safe_load(open('configs/prod.yaml'))
for d in c['applications'][0]['deployments']:
    if d['name'] == 'BackgroundRemover':
        d['logging_config'] = {'enable_access_log': False}
    if d['name'] == 'Ingress':
        d['ray_actor_options']['runtime_env'] = {'env_vars': {'RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD': '0', 'RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP': '0'}}
yaml.safe_dump(c, open('/tmp/prod_v2.yaml', 'w'))
PY
show() { python3 -c "import json; r=json.load(open('$1')); print(r['ready_after_s'], r['model'].get('compile_warmup')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','server_stage_mean_ms','gpu_busy_fraction','gpu_sm_clock_mhz','batch_size_histogram','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-1500; }
for v in v1:configs/prod.yaml v2:/tmp/prod_v2.yaml; do
  name=${v%%:*}; cfg=${v#*:}
  pkill -x haproxy
  timeout $((590-SECONDS)) python3 scripts/bench_service.py --config $cfg --model-id import:birefnet_random:build --photo-dir .photos \
    --set-model execution=compiled --set-model graph_batch_sizes=[1,8] --set-model compile_cache_dir=/tmp/cc --set-model "$CG" \
    --ingress-proxy haproxy --ingress-replicas 12 --remover-replicas 1 --ready-timeout 150 --levels 1 --duration 25 --warmup 5 \
    --set-ingress device_jpeg_decode=when_idle --out $OUT/service_$name.json > $OUT/service_$name.log 2>&1; ph "service $name exit $?"
  show $OUT/service_$name.json || tail -3 $OUT/service_$name.log | cut -c1-1000
  rm -rf /tmp/bench_service_*; ray stop --force > /dev/null 2>&1
done
pkill -x haproxy; ph done
