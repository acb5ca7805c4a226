# Twelfth session, call 3 (fresh machine): side-stream pre/post probe, PNG stripe probe, prebuild, model-only with
# more iterations (steady clocks), service when_idle 1,64 with the side streams; nvidia-smi clocks throughout.
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
show() { python3 -c "import json; r=json.load(open('$1')); print(r['ready_after_s'], r.get('ingress_proxy'), r['model'].get('execution'), r['model'].get('compile_warmup')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','mean_response_bytes','server_stage_mean_ms','gpu_busy_fraction','batch_size_histogram','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-1500; }
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu --format=csv -lms 1000 > $OUT/smi.csv 2>&1 &
timeout 90 python3 .gpurun/probe_streams.py > $OUT/probe_streams.log 2>&1; ph "probe_streams exit $?"; grep '^{' $OUT/probe_streams.log || tail -5 $OUT/probe_streams.log
timeout 60 python3 .gpurun/probe_png2.py .photos > $OUT/probe_png2.log 2>&1; ph "probe_png2 exit $?"; cat $OUT/probe_png2.log | cut -c1-200
CG='compile_options={"triton.cudagraphs": true}'
timeout 250 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=import:birefnet_random:build \
  --set execution=compiled --set compile_cache_dir=/tmp/cc --set "graph_batch_sizes=[1, 8]" --set "$CG" > $OUT/prebuild.log 2>&1; ph "prebuild exit $?"
grep '^{' $OUT/prebuild.log | cut -c1-400
ray stop --force > /dev/null 2>&1
timeout 120 python3 scripts/bench_model.py --in-ray-task configs/prod.yaml --model-id import:birefnet_random:build --precisions fp16 \
  --compile-cache-dir /tmp/cc --compile-options '{"triton.cudagraphs": true}' --modes eager,compiled --batch-sizes 1,8 --iterations 100 \
  --out $OUT/model.json > $OUT/model.log 2>&1; ph "model exit $?"
python3 -c "import json; [print(r['mode'], r['batch_size'], r['ms_per_batch'], r['images_per_s']) for r in json.load(open('$OUT/model.json'))['results']]" 2>&1 | tail -4
ray stop --force > /dev/null 2>&1
svc() {  # name, levels, timeout, extra
  timeout $3 python3 scripts/bench_service.py --config configs/prod.yaml --model-id import:birefnet_random:build --photo-dir .photos \
    --set-model execution=compiled --set-model graph_batch_sizes=[1,8] --set-model compile_cache_dir=/tmp/cc --set-model "$CG" \
    --ingress-proxy haproxy --ingress-replicas 12 --remover-replicas 1 --ready-timeout 130 --levels $2 --duration 20 --warmup 5 \
    $4 --out $OUT/service_$1.json > $OUT/service_$1.log 2>&1
  ph "service $1 exit $?"
  show $OUT/service_$1.json || tail -5 $OUT/service_$1.log | cut -c1-1500
  for f in /tmp/bench_service_*/serve.log; do head -c 20000 $f > $OUT/serve_$1_head.log; tail -c 8000 $f > $OUT/serve_$1_tail.log; done; rm -rf /tmp/bench_service_*
  ray stop --force > /dev/null 2>&1; pkill -x haproxy; sleep 2
}
svc when_idle 1,64 $((580-SECONDS)) "--set-ingress device_jpeg_decode=when_idle"
kill %1 2>/dev/null
ph done
