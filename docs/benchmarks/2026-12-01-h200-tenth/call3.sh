# session 10, call 3: compiled + triton.cudagraphs, HAProxy: the service with the ingress reusing freed buffers (this
# commit, 1 and 64 clients), the same with MALLOC_MMAP_THRESHOLD_=1048576 in the ingress as before (1 client), and
# with device_jpeg_decode=when_idle (1 client); same machine
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
show() { python3 -c "import json; r=json.load(open('$1')); print(r['ready_after_s'], r.get('ingress_proxy'), r['model'].get('execution'), r['model'].get('compile_warmup')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','mean_response_bytes','server_stage_mean_ms','gpu_busy_fraction','batch_size_histogram','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-1500; }
CG='compile_options={"triton.cudagraphs": true}'
timeout 230 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=import:birefnet_random:build \
  --set execution=compiled --set compile_cache_dir=/tmp/cc --set "graph_batch_sizes=[1, 8]" --set "$CG" > $OUT/prebuild.log 2>&1; ph "prebuild exit $?"
grep '^{' $OUT/prebuild.log | cut -c1-400
ray stop --force > /dev/null 2>&1
sed 's#^          num_cpus: 1                   \# (freed image.*#          num_cpus: 1\n          runtime_env: {env_vars: {MALLOC_MMAP_THRESHOLD_: "1048576"}}#' configs/prod.yaml > /tmp/prod_mmap.yaml
grep -n "MALLOC" /tmp/prod_mmap.yaml
svc() {  # name, config, levels, timeout, extra
  timeout $4 python3 scripts/bench_service.py --config $2 --model-id import:birefnet_random:build --photo-dir .photos \
    --set-model execution=compiled --set-model graph_batch_sizes=[1,8] --set-model compile_cache_dir=/tmp/cc --set-model "$CG" \
    --ingress-proxy haproxy --ingress-replicas 12 --remover-replicas 1 --ready-timeout 130 --levels $3 --duration 20 --warmup 5 \
    $5 --out $OUT/service_$1.json > $OUT/service_$1.log 2>&1
  ph "service $1 exit $?"
  show $OUT/service_$1.json || tail -30 $OUT/service_$1.log
  for f in /tmp/bench_service_*/serve.log; do tail -c 12000 $f > $OUT/serve_$1_tail.log; done; rm -rf /tmp/bench_service_*
  ray stop --force > /dev/null 2>&1; pkill -f haproxy; sleep 2
}
svc reuse configs/prod.yaml 1,64 170 ""
svc mmap /tmp/prod_mmap.yaml 1 120 ""
svc reuse_when_idle configs/prod.yaml 1 $((590-SECONDS)) "--set-ingress device_jpeg_decode=when_idle"
