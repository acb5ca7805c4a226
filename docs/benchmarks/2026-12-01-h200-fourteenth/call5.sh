# Fourteenth session, call 5 (fresh machine; refused: max_batch_size is at most 256): the OOM split on an H200. Eager fp16 needs ~1.26 GB per image at
# 1024x1024 (peak 20.2 GB at batch 16, call 3), so ~105 fit in 141 GB; the cap is 512 (>4x), the start-up probe off.
# For batches above what fits, more than ~105 requests must reach the model replica at once: 12 ingress replicas
# with 16 requests each (prod.yaml: 8) = 192 slots, 160 clients opening at once, a 1 s batch wait.
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
python3 -c "
import yaml
config = yaml.safe_load(open('configs/prod.yaml'))
for deployment in config['applications'][0]['deployments']:
    if deployment['name'] == 'Ingress':
        deployment['max_ongoing_requests'] = 16
yaml.safe_dump(config, open('/tmp/oom.yaml', 'w'), sort_keys=False)
"
timeout 300 python3 scripts/bench_service.py --config /tmp/oom.yaml --model-id import:birefnet_random:build --photo-dir .photos \
  --set-model execution=eager --set-model probe_batch_limit=false --max-batch-size 512 --batch-wait-s 1.0 \
  --ingress-proxy haproxy --ingress-replicas 12 --remover-replicas 1 --levels 160 --duration 120 --warmup 5 --ready-timeout 120 \
  --out $OUT/oom.json > $OUT/oom.log 2>&1; ph "oom exit $?"
python3 -c "import json; r=json.load(open('$OUT/oom.json')); m=r['model_after']; print(m.get('out_of_memory_splits'), m.get('batching'), m.get('batch_size_histogram')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','statuses_all_requests','errors_all_requests','batch_size_histogram','requests_measured')}) for l in r['levels']]" 2>&1 | cut -c1-1500
for f in /tmp/bench_service_*/serve.log; do grep -i "out of device memory\|batch settings now\|OutOfMemory" $f | tail -8 | cut -c1-300 > $OUT/oom_serve_lines.log; done
cat $OUT/oom_serve_lines.log
rm -rf /tmp/bench_service_*; ray stop --force > /dev/null 2>&1; pkill -x haproxy; ph done
