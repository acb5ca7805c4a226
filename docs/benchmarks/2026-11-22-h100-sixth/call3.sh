# session 6, call 3: the prod default (CUDA graphs) end to end after the attention fix, 64 clients then 1; then
# the OOM split under a 2-minute load with the batch cap above what fits (96 clients)
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
show() { python3 -c "import json; r=json.load(open('$1')); print(r['ready_after_s']); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','server_stage_mean_ms','gpu_busy_fraction','batch_size_histogram')}) for l in r['levels']]" 2>&1 | cut -c1-1200; }
timeout 230 python3 scripts/bench_service.py --config configs/prod.yaml --model-id import:birefnet_random:build --photo-dir .photos \
  --ingress-replicas 12 --remover-replicas 1 --levels 64,1 --duration 40 --warmup 10 --ready-timeout 120 --out $OUT/service_graphs.json > $OUT/service_graphs.log 2>&1; ph "service graphs exit $?"
show $OUT/service_graphs.json
sleep 3
timeout $((590-SECONDS)) python3 scripts/bench_service.py --config configs/prod.yaml --model-id import:birefnet_random:build --photo-dir .photos \
  --set-model execution=eager --set-model probe_batch_limit=false --max-batch-size 128 --batch-wait-s 1.0 \
  --ingress-replicas 12 --remover-replicas 1 --levels 96 --duration 120 --warmup 5 --ready-timeout 90 --out $OUT/oom.json > $OUT/oom.log 2>&1; ph "oom exit $?"
python3 -c "import json; r=json.load(open('$OUT/oom.json')); m=r['model_after']; print(m.get('out_of_memory_splits'), m.get('batching')); [print({k: l.get(k) for k in ('clients','images_per_s','statuses_all_requests','batch_size_histogram')}) for l in r['levels']]" 2>&1 | cut -c1-900
