# session 10, call 4: execution cuda_graphs (prod.yaml), HAProxy, 1 client: the ingress with MALLOC_MMAP_THRESHOLD_=1048576
# as before, then reusing freed buffers (this commit); same machine
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
show() { python3 -c "import json; r=json.load(open('$1')); print(r['ready_after_s'], r.get('ingress_proxy'), r['model'].get('execution')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','server_stage_mean_ms','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-1200; }
sed 's#^          num_cpus: 1                   \# (freed image.*#          num_cpus: 1\n          runtime_env: {env_vars: {MALLOC_MMAP_THRESHOLD_: "1048576"}}#' configs/prod.yaml > /tmp/prod_mmap.yaml
svc() {  # name, config, timeout
  timeout $3 python3 scripts/bench_service.py --config $2 --model-id import:birefnet_random:build --photo-dir .photos \
    --ingress-proxy haproxy --ingress-replicas 12 --remover-replicas 1 --ready-timeout 100 --levels 1 --duration 15 --warmup 4 \
    --out $OUT/service_$1.json > $OUT/service_$1.log 2>&1
  ph "service $1 exit $?"
  show $OUT/service_$1.json || tail -5 $OUT/service_$1.log
  rm -rf /tmp/bench_service_*; ray stop --force > /dev/null 2>&1; pkill -f haproxy; sleep 1
}
svc mmap /tmp/prod_mmap.yaml 110
svc reuse configs/prod.yaml $((235-SECONDS))
