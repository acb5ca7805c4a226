# Twelfth session, call 2 (call 1's machine, cache in /tmp/cc): one client, when_idle, with Ray's inline-object limit raised to 32 MiB.
[ -d /tmp/site/ray ] || source .gpurun/setup.sh
export PYTHONPATH=/tmp/site:$PWD:$PWD/scripts RAY_USAGE_STATS_ENABLED=0 PATH=/tmp/site/bin:$PATH
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
show() { python3 -c "import json; r=json.load(open('$1')); print(r['ready_after_s'], r.get('ingress_proxy'), r['model'].get('execution'), r['model'].get('compile_warmup')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','mean_response_bytes','server_stage_mean_ms','gpu_busy_fraction','batch_size_histogram','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-1500; }
CG='compile_options={"triton.cudagraphs": true}'
svc() {  # name, levels, timeout, extra
  timeout $3 python3 scripts/bench_service.py --config configs/prod.yaml --model-id import:birefnet_random:build --photo-dir .photos \
    --set-model execution=compiled --set-model graph_batch_sizes=[1,8] --set-model compile_cache_dir=/tmp/cc --set-model "$CG" \
    --ingress-proxy haproxy --ingress-replicas 12 --remover-replicas 1 --ready-timeout 130 --levels $2 --duration 20 --warmup 5 \
    $4 --out $OUT/service_$1.json > $OUT/service_$1.log 2>&1
  ph "service $1 exit $?"
  show $OUT/service_$1.json || tail -5 $OUT/service_$1.log | cut -c1-1500
  for f in /tmp/bench_service_*/serve.log; do tail -c 12000 $f > $OUT/serve_$1_tail.log; done; rm -rf /tmp/bench_service_*
  ray stop --force > /dev/null 2>&1; pkill -x haproxy; sleep 2
}
RAY_max_direct_call_object_size=33554432 svc when_idle_inline 1 200 "--set-ingress device_jpeg_decode=when_idle"
ph done
