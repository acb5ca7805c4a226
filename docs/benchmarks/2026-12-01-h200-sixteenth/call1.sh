# Sixteenth session, call 1 (fresh machine): cold prebuild of compiled_graphs into /tmp/cc (for call 2); the encode-gap
# probe at 8 and 16 threads; then one client, A/B on the ingress side (execution cuda_graphs: starts in seconds; the
# model's execution does not touch the ingress): png_threads 8, 16, inline arguments from the ingress, 8 again.
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
nproc > $OUT/host.txt; lscpu | grep -i "model name\|mhz\|per core\|socket\|L3" >> $OUT/host.txt
timeout 280 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=import:birefnet_random:build \
  --set execution=compiled_graphs --set compile_cache_dir=/tmp/cc --set "graph_batch_sizes=[1, 8]" --set "compile_options={}" > $OUT/prebuild.log 2>&1; ph "prebuild exit $?"
grep '^{' $OUT/prebuild.log | cut -c1-300
ray stop --force > /dev/null 2>&1; pkill -x haproxy
for t in 8 16; do timeout 60 python3 docs/benchmarks/2026-12-01-h200-fifteenth/cpu_encode_gap_probe.py $t > $OUT/encode_gap_$t.log 2>&1; ph "probe $t exit $?"; cat $OUT/encode_gap_$t.log | grep mean; done
python3 -c "
import yaml
config = yaml.safe_load(open('configs/prod.yaml'))
for deployment in config['applications'][0]['deployments']:
    if deployment['name'] == 'Ingress':
        deployment['ray_actor_options']['runtime_env'] = {'env_vars': {'RAY_max_direct_call_object_size': '2097152'}}
yaml.safe_dump(config, open('/tmp/inline.yaml', 'w'), sort_keys=False)
"
ab() { name=$1; cfg=$2; shift 2
  timeout $((595-SECONDS)) python3 scripts/bench_service.py --config $cfg --model-id import:birefnet_random:build --photo-dir .photos \
    --set-model execution=cuda_graphs --set-model "graph_batch_sizes=[1, 8]" --ingress-proxy haproxy --ingress-replicas 12 \
    --remover-replicas 1 --ready-timeout 100 --levels 1 --duration 20 --warmup 5 --set-ingress device_jpeg_decode=when_idle \
    "$@" --out $OUT/ab_$name.json > $OUT/ab_$name.log 2>&1; ph "ab $name exit $?"
  python3 -c "import json; r=json.load(open('$OUT/ab_$name.json')); l=r['levels'][0]; print('$name', r['ready_after_s'], l['latency_ms'], {k: round(v, 2) for k, v in l['server_stage_mean_ms'].items()}, l.get('outside_ingress_stages'))" 2>&1 | cut -c1-1200
  rm -rf /tmp/bench_service_*; ray stop --force > /dev/null 2>&1; pkill -x haproxy
}
ab png8 configs/prod.yaml
ab png16 configs/prod.yaml --set-ingress png_threads=16
ab inline /tmp/inline.yaml
ab png8_again configs/prod.yaml
ph done
