# session 8, call 5: the capturable deform_conv2d sampling in fp16: probe (exactness, time), accuracy of cuda_graphs
# against eager fp32, model-only eager and cuda_graphs, then the service as prod.yaml ships it (cuda_graphs) at 1 and 64 clients
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
timeout 120 python3 docs/benchmarks/2026-11-22-h100-eighth/call4_probe.py > $OUT/dcprobe2.log 2>&1; ph "probe exit $?"
grep -v Warn $OUT/dcprobe2.log | tail -16 | cut -c1-300
timeout 200 python3 scripts/check_accuracy.py --model-id import:birefnet_random:build --photo-dir .photos --photos 50 \
  --candidates cuda_graphs:fp16 --batch-size 8 --out $OUT/accuracy_graphs.json > $OUT/accuracy_graphs.log 2>&1; ph "accuracy exit $?"
grep "^{" $OUT/accuracy_graphs.log | cut -c1-400; tail -2 $OUT/accuracy_graphs.log | cut -c1-300
timeout 150 python3 scripts/bench_model.py --model-id import:birefnet_random:build --precisions fp16 \
  --modes cuda_graphs,eager --batch-sizes 1,8 --iterations 20 --out $OUT/model.json > $OUT/model.log 2>&1; ph "model exit $?"
grep "^{" $OUT/model.log | cut -c1-330
show() { python3 -c "import json; r=json.load(open('$1')); print(r['ready_after_s'], r['model'].get('execution'), r['model'].get('capturable_deform_conv'), r['model'].get('batching')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','mean_response_bytes','server_stage_mean_ms','gpu_busy_fraction','batch_size_histogram','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-1500; }
timeout $((585-SECONDS)) python3 scripts/bench_service.py --config configs/prod.yaml --model-id import:birefnet_random:build --photo-dir .photos \
  --ingress-replicas 12 --remover-replicas 1 --ready-timeout 150 --levels 1,64 --duration 30 --warmup 8 --out $OUT/service_graphs.json > $OUT/service_graphs.log 2>&1; ph "service exit $?"
show $OUT/service_graphs.json
grep -i "Traceback" /tmp/bench_service_*/serve.log 2>/dev/null | head -3
