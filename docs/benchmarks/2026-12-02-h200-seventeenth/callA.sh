# Seventeenth session, call A (fresh machine): every issue-5 point in one lease, part 1. The cold prebuild of
# compiled_graphs (buckets 1 and 8) alone, then the service from that cache at 1 and 64 clients (prod.yaml: png_threads
# 16, HAProxy, 12 ingress replicas, device_jpeg_decode when_idle). Calls B and C follow within 30 s (/tmp/cc kept).
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
nproc > $OUT/host.txt; lscpu | grep -i "model name\|per core\|socket" >> $OUT/host.txt; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> $OUT/host.txt; cat $OUT/host.txt
timeout 300 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=import:birefnet_random:build \
  --set execution=compiled_graphs --set compile_cache_dir=/tmp/cc --set "graph_batch_sizes=[1, 8]" --set "compile_options={}" > /tmp/prebuild.log 2>&1; ph "prebuild exit $?"
grep '^{' /tmp/prebuild.log | cut -c1-400; grep -i "Traceback" -A3 /tmp/prebuild.log | head -8; cp /tmp/prebuild.log $OUT/prebuild.log
ray stop --force > /dev/null 2>&1; pkill -x haproxy
timeout $((590-SECONDS)) python3 scripts/bench_service.py --config configs/prod.yaml --model-id import:birefnet_random:build --photo-dir .photos \
  --set-model execution=compiled_graphs --set-model graph_batch_sizes=[1,8] --set-model compile_cache_dir=/tmp/cc --set-model "compile_options={}" \
  --ingress-proxy haproxy --ingress-replicas 12 --remover-replicas 1 --ready-timeout 150 --levels 1,64 --duration 25 --warmup 5 \
  --set-ingress device_jpeg_decode=when_idle --out $OUT/service.json > $OUT/service.log 2>&1; ph "service exit $?"
python3 -c "import json; r=json.load(open('$OUT/service.json')); print(r['ready_after_s'], r.get('startup')); print('model_after', {k: r.get('model_after', {}).get(k) for k in ('device_passes', 'batch_size_histogram', 'compile_warmup')}); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','server_stage_mean_ms','outside_ingress_stages','gpu_busy_fraction','gpu_sm_clock_mhz','batch_size_histogram','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-2400
rm -rf /tmp/bench_service_*; ray stop --force > /dev/null 2>&1; pkill -x haproxy; ph done
