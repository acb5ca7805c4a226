# session 9, call 4: the prod.yaml default (cuda_graphs) with HAProxy, after the PNG stripes took over writing the
# alpha (render() no longer composes first); compare the encode stage with call 1 (18.3-18.5 ms at one client)
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
show() { python3 -c "import json; r=json.load(open('$1')); print(r['ready_after_s'], r.get('ingress_proxy'), r['model'].get('execution')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','mean_response_bytes','server_stage_mean_ms','gpu_busy_fraction','batch_size_histogram','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-1500; }
timeout 300 python3 scripts/bench_service.py --config configs/prod.yaml --model-id import:birefnet_random:build --photo-dir .photos \
  --ingress-proxy haproxy --ingress-replicas 12 --remover-replicas 1 --ready-timeout 100 --levels 1,64 --duration 30 --warmup 8 \
  --out $OUT/service_graphs_haproxy.json > $OUT/service_graphs_haproxy.log 2>&1; ph "service exit $?"
show $OUT/service_graphs_haproxy.json || tail -30 $OUT/service_graphs_haproxy.log
