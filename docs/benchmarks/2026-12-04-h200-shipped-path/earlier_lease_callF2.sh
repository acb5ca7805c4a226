# Final lease, call 2 (call D1's setup on the same machine): the Ray kit, a cold prebuild, the model alone, then
# `serve run` of prod.yaml as shipped (model_id only): /readyz, 64 and 1 clients, 64 at 12 MP, the bulk client.
source .gpurun/setup.sh; ROOT=$PWD; mkdir -p /tmp/r; ph "setup done"; cat /tmp/host_pyc.txt | tee /tmp/r/host_pyc.txt
timeout 120 python3 -m pytest -p no:cacheprovider -n 0 -m gpu tests/gpu/test_jpeg_on_device.py -q -rA > /tmp/r/gpu_jpeg.log 2>&1; ph "gpu jpeg tests exit $?"
tail -4 /tmp/r/gpu_jpeg.log | cut -c1-300
nohup python3 -c "from pathlib import Path; from harness.photos import write_sample_photo_folder; write_sample_photo_folder('/tmp/bulk/in', 3000, photo_dir=Path('/tmp/photos'), workers=3)" > /tmp/r/photos.log 2>&1 &
timeout 240 python3 -m serve_app.prebuild --address local --config /tmp/one.yaml > /tmp/r/prebuild.log 2>&1; ph "prebuild exit $?"
grep -E '^\{' /tmp/r/prebuild.log | cut -c1-300; ray stop --force > /dev/null 2>&1
timeout 150 python3 scripts/bench_model.py --in-ray-task /tmp/one.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
  --iterations 20 --out /tmp/r/model.json > /tmp/r/model.log 2>&1; ph "model exit $?"; ray stop --force > /dev/null 2>&1
grep -h "images_per_s" /tmp/r/model.log | cut -c1-300 | tail -2
start=$(date +%s.%N); (serve run /tmp/one.yaml > /tmp/r/serve.log 2>&1) &
for i in $(seq 1 1500); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "readyz 200 after $ready s"
python3 .gpurun/replicas.py > /tmp/r/replicas_ready.json 2>/dev/null
for pid in $(pgrep -f "ServeReplica:background-removal" | head -3); do tr "\0" "\n" < /proc/$pid/environ | grep RAY_SERVE_RUN | tr "\n" " "; echo " ($pid)"; done | tee /tmp/r/replica_env.txt
timeout 130 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --levels 64,1 \
  --duration 30 --warmup 15 --serve-run-at $start --ready-after-s $ready --out /tmp/r/service.json > /tmp/r/service.log 2>&1; ph "service exit $?"
grep -E "images/s|p50" /tmp/r/service.log | cut -c1-330 | head -4
timeout 80 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --photo-size 4000x3000 --photos 12 \
  --levels 64 --duration 30 --warmup 20 --out /tmp/r/service_12mp.json > /tmp/r/service_12mp.log 2>&1; ph "12 MP exit $?"
grep -E "images/s" /tmp/r/service_12mp.log | cut -c1-250 | head -2; wait
timeout $((590-SECONDS)) python3 scripts/bench_bulk.py --mode client --url http://127.0.0.1:8000 --work-dir /tmp/bulk --photos 3000 \
  --photo-dir /tmp/photos --compare-url http://127.0.0.1:8000 --out /tmp/r/bulk_client.json > /tmp/r/bulk_client.log 2>&1; ph "bulk client exit $?"
tail -2 /tmp/r/bulk_client.log | cut -c1-400
python3 .gpurun/replicas.py > /tmp/r/replicas_after.json 2>/dev/null; curl -s http://127.0.0.1:8000/v1/info > /tmp/r/info_after.json
kill %1 2>/dev/null; sleep 2; ray stop --force > /dev/null 2>&1; pkill -x haproxy
head -c 80000 /tmp/r/serve.log > /tmp/r/serve_head.log; grep -v "^\s*$" /tmp/r/serve.log | tail -c 60000 > /tmp/r/serve_tail.log; rm /tmp/r/serve.log
cp $OUT/phases.txt /tmp/r/phases_f2.txt; tar -C /tmp -czf $OUT/callF2.tgz r; ph done
