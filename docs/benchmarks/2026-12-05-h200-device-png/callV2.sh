# Lease V, call 2 (call V1's machine; carry .devkit): cold prebuild, then `serve run` of prod.yaml as shipped
# (model_id only) on the cutout-on-device tree: /readyz, 64 clients at 12 MP (CPU per process meanwhile), 64 and 1
# clients on the mixed photos.
[ -f /tmp/one.yaml ] || { echo "not call V1's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/v; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/v/phases_v2.txt; tar -C /tmp -czf $OUT/callV2.tgz v; }
timeout 240 python3 -m serve_app.prebuild --address local --config /tmp/one.yaml > /tmp/v/prebuild.log 2>&1; ph "prebuild exit $?"
ray stop --force > /dev/null 2>&1
start=$(date +%s.%N); (serve run /tmp/one.yaml > /tmp/v/serve.log 2>&1) &
for i in $(seq 1 1500); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "readyz 200 after $ready s"

(timeout 80 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --photo-size 4000x3000 --photos 12 \
  --levels 64 --duration 30 --warmup 20 --out /tmp/v/service_12mp.json > /tmp/v/service_12mp.log 2>&1; ph "12 MP exit $?") &
sleep 30; python3 .gpurun/cpu_by_proc.py 20 > /tmp/v/cpu_12mp.json; wait %2; cat /tmp/v/cpu_12mp.json
grep -E "images/s" /tmp/v/service_12mp.log | cut -c1-300 | head -2; pack
timeout 130 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --levels 64,1 \
  --duration 30 --warmup 15 --out /tmp/v/service.json > /tmp/v/service.log 2>&1; ph "service exit $?"
grep -E "images/s|p50" /tmp/v/service.log | cut -c1-330 | head -4
python3 .gpurun/replicas.py > /tmp/v/replicas_after.json 2>/dev/null; curl -s http://127.0.0.1:8000/v1/info > /tmp/v/info_after.json
kill %1 2>/dev/null; sleep 2; ray stop --force > /dev/null 2>&1; pkill -x haproxy
grep -v "^\s*$" /tmp/v/serve.log | tail -c 30000 > /tmp/v/serve_tail.log; rm /tmp/v/serve.log; ph done; pack
