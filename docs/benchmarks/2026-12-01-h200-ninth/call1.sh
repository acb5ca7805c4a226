# session 9, call 1: the same service (prod.yaml, execution cuda_graphs) under three Serve ingress modes:
# the default proxy actor, HAProxy (RAY_SERVE_ENABLE_HA_PROXY=1: direct ingress to the replicas), and HAProxy plus
# RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (gRPC between deployments); 1 and 64 clients each
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
show() { python3 -c "import json; r=json.load(open('$1')); print(r['ready_after_s'], r['model'].get('execution')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','mean_response_bytes','server_stage_mean_ms','gpu_busy_fraction','batch_size_histogram','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-1500; }
svc() {  # name, then env assignments
  name=$1; shift
  env "$@" timeout 170 python3 scripts/bench_service.py --config configs/prod.yaml --model-id import:birefnet_random:build --photo-dir .photos \
    --ingress-replicas 12 --remover-replicas 1 --ready-timeout 100 --levels 1,64 --duration 20 --warmup 6 --out $OUT/service_$name.json > $OUT/service_$name.log 2>&1
  ph "service $name exit $?"
  show $OUT/service_$name.json || tail -30 $OUT/service_$name.log
  for f in /tmp/bench_service_*/serve.log; do cp $f $OUT/serve_$name.log; done; rm -rf /tmp/bench_service_*
  ray stop --force > /dev/null 2>&1; pkill -f haproxy; sleep 2
}
svc default RAY_SERVE_ENABLE_HA_PROXY=0
svc haproxy RAY_SERVE_ENABLE_HA_PROXY=1
svc haproxy_tput RAY_SERVE_ENABLE_HA_PROXY=1 RAY_SERVE_THROUGHPUT_OPTIMIZED=1
