# Sixteenth session, call 4 (call 3 again, after call 3 answered its first 440 requests 504 past the 60 s deadline): cudnn now
# searches algorithms only for batch sizes that already ran, and the OOM warning says how long each failed attempt took.
# The OOM split on an H200 at 4x what fits. Eager fp16 needs ~1.26 GB per image at 1024x1024
# (fourteenth session), so ~105 fit in 141 GB; the cap is 448 (>4x), the start-up probe off. More than 105 requests
# must reach the model replica at once: 12 ingress replicas x 40 requests (prod.yaml: 8) = 480 slots, 440 clients,
# the model replica taking 512 (prod.yaml: 256), a 1 s batch wait, 2 minutes.
[ -d /tmp/site/ray ] || source .gpurun/setup.sh
export PYTHONPATH=/tmp/site:$PWD:$PWD/scripts RAY_USAGE_STATS_ENABLED=0 PATH=/tmp/site/bin:$PATH
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
python3 -c "
import yaml
config = yaml.safe_load(open('configs/prod.yaml'))
for deployment in config['applications'][0]['deployments']:
    if deployment['name'] == 'Ingress':
        deployment['max_ongoing_requests'] = 40
        deployment['max_queued_requests'] = 512
    if deployment['name'] == 'BackgroundRemover':
        deployment['max_ongoing_requests'] = 512
        deployment['max_queued_requests'] = 1024
yaml.safe_dump(config, open('/tmp/oom.yaml', 'w'), sort_keys=False)
"
ray stop --force > /dev/null 2>&1; pkill -x haproxy
timeout 420 python3 scripts/bench_service.py --config /tmp/oom.yaml --model-id import:birefnet_random:build --photo-dir .photos \
  --set-model execution=eager --set-model probe_batch_limit=false --max-batch-size 448 --batch-wait-s 1.0 \
  --ingress-proxy haproxy --ingress-replicas 12 --remover-replicas 1 --levels 440 --duration 120 --warmup 5 --ready-timeout 120 \
  --out $OUT/oom.json > $OUT/oom.log 2>&1; ph "oom exit $?"
python3 -c "import json; r=json.load(open('$OUT/oom.json')); m=r['model_after']; print(m.get('out_of_memory_splits'), m.get('batching'), m.get('batch_size_histogram')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','statuses_all_requests','errors_all_requests','batch_size_histogram','requests_measured')}) for l in r['levels']]" 2>&1 | cut -c1-1500
for f in /tmp/bench_service_*/serve.log; do grep -i "out of device memory\|batch settings now\|OutOfMemory" $f | tail -12 | cut -c1-300 > $OUT/oom_serve_lines.log; done
cat $OUT/oom_serve_lines.log
rm -rf /tmp/bench_service_*; ray stop --force > /dev/null 2>&1; pkill -x haproxy; ph done
