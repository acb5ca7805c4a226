# Two models on one GPU, call 2 (same machine, after callM1.sh): `serve run` of prod.yaml with one model, 64 clients;
# then of prod.yaml with both models: 64 clients on the default model, then 64 split half and half.
source .gpurun/setup.sh; ROOT=$PWD; mkdir -p /tmp/r
ray stop --force > /dev/null 2>&1
service() {  # $1 = name, $2 = config, $3 = levels
  start=$(date +%s.%N); (PYTHONPATH=/tmp/site:$ROOT:$ROOT/scripts serve run $2 > /tmp/r/serve_$1.log 2>&1) &
  for i in $(seq 1 1200); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
  ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "$1 readyz 200 after $ready s"
  timeout 300 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir .photos --levels $3 \
    --duration 30 --warmup 15 --serve-run-at $start --ready-after-s $ready --out /tmp/r/service_$1.json > /tmp/r/service_$1.log 2>&1; ph "$1 service exit $?"
  grep -E "images_per_s" /tmp/r/service_$1.log | python3 -c "
import json, sys
for line in sys.stdin:
    if not line.startswith('{'): continue
    d = json.loads(line); print(d['query'], d.get('images_per_s'), d.get('statuses_all_requests'), d.get('batch_size_histogram_by_model'))"
  curl -s http://127.0.0.1:8000/v1/info > /tmp/r/info_$1.json
  pkill -f 'serve run'; sleep 2; ray stop --force > /dev/null 2>&1; pkill -x haproxy; sleep 1
  grep -v "^\s*$" /tmp/r/serve_$1.log | tail -c 40000 > /tmp/r/serve_$1_tail.log; rm /tmp/r/serve_$1.log
}
service one /tmp/one.yaml 64
service two /tmp/two.yaml "64,64:model=birefnet|model=birefnet_lite"
cp $OUT/phases.txt /tmp/r/phases_m2.txt; tar -C /tmp -czf $OUT/callM2.tgz r; ph done
