# session 10, call 2: the model's masks from nvJPEG input vs libjpeg-turbo input (eager fp16, 50 photos) beside a cold
# prebuild of compiled + triton.cudagraphs; then the service (HAProxy) with device_jpeg_decode when_idle (1, 64 clients)
# and never (1 client), same machine
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
show() { python3 -c "import json; r=json.load(open('$1')); print(r['ready_after_s'], r.get('ingress_proxy'), r['model'].get('execution'), r['model'].get('compile_warmup')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','mean_response_bytes','server_stage_mean_ms','gpu_busy_fraction','batch_size_histogram','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-1500; }
CG='compile_options={"triton.cudagraphs": true}'
(timeout 250 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=import:birefnet_random:build \
  --set execution=compiled --set compile_cache_dir=/tmp/cc --set "graph_batch_sizes=[1, 8]" --set "$CG" > $OUT/prebuild.log 2>&1; ph "prebuild exit $?") &
sleep 1
timeout 200 python3 .gpurun/probe_decode_accuracy.py 50 > $OUT/decode_accuracy.log 2>&1; ph "accuracy exit $?"
grep '^{"photos' $OUT/decode_accuracy.log; tail -2 $OUT/decode_accuracy.log | cut -c1-300
wait
grep '^{' $OUT/prebuild.log | cut -c1-400
ray stop --force > /dev/null 2>&1
svc() {  # name, levels, timeout, extra
  timeout $3 python3 scripts/bench_service.py --config configs/prod.yaml --model-id import:birefnet_random:build --photo-dir .photos \
    --set-model execution=compiled --set-model graph_batch_sizes=[1,8] --set-model compile_cache_dir=/tmp/cc --set-model "$CG" \
    --ingress-proxy haproxy --ingress-replicas 12 --remover-replicas 1 --ready-timeout 130 --levels $2 --duration 25 --warmup 6 \
    $4 --out $OUT/service_$1.json > $OUT/service_$1.log 2>&1
  ph "service $1 exit $?"
  show $OUT/service_$1.json || tail -30 $OUT/service_$1.log
  for f in /tmp/bench_service_*/serve.log; do tail -c 20000 $f > $OUT/serve_$1_tail.log; done; rm -rf /tmp/bench_service_*
  ray stop --force > /dev/null 2>&1; pkill -f haproxy; sleep 2
}
svc when_idle 1,64 200 ""
svc never 1 $((585-SECONDS)) "--set-ingress device_jpeg_decode=never"
