# Final lease, call 2 (call F1's setup on the same machine): the Ray kit, a cold prebuild, the model alone, then
# `serve run` of prod.yaml as shipped (model_id only): /readyz, 64 and 1 clients; then the same with
# device_jpeg_decode: never, 1 client. The records are packed after every step.
source .gpurun/setup.sh; ROOT=$PWD; mkdir -p /tmp/r; ph "setup done"; cat /tmp/host_pyc.txt | tee /tmp/r/host_pyc.txt
pack() { cp $OUT/phases.txt /tmp/r/phases_g2.txt; tar -C /tmp -czf $OUT/callG2.tgz r; }
timeout 240 python3 -m serve_app.prebuild --address local --config /tmp/one.yaml > /tmp/r/prebuild.log 2>&1; ph "prebuild exit $?"
grep -E '^\{' /tmp/r/prebuild.log | cut -c1-300; ray stop --force > /dev/null 2>&1; pack
timeout 150 python3 scripts/bench_model.py --in-ray-task /tmp/one.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
  --iterations 20 --out /tmp/r/model.json > /tmp/r/model.log 2>&1; ph "model exit $?"; ray stop --force > /dev/null 2>&1
python3 -c "import json; d = json.load(open('/tmp/r/model.json')); print(json.dumps(d)[:1500])"; pack
service() {  # $1 = name, $2 = config, $3 = levels
  start=$(date +%s.%N); (serve run $2 > /tmp/r/serve_$1.log 2>&1) &
  for i in $(seq 1 1500); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
  ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "$1 readyz 200 after $ready s"
  python3 .gpurun/replicas.py > /tmp/r/replicas_$1_ready.json 2>/dev/null
  timeout 130 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --levels $3 \
    --duration 30 --warmup 15 --serve-run-at $start --ready-after-s $ready --out /tmp/r/service_$1.json > /tmp/r/service_$1.log 2>&1; ph "$1 service exit $?"
  grep -E "images/s|p50" /tmp/r/service_$1.log | cut -c1-1200 | head -4
  python3 .gpurun/replicas.py > /tmp/r/replicas_$1_after.json 2>/dev/null; curl -s http://127.0.0.1:8000/v1/info > /tmp/r/info_$1.json
  kill %1 2>/dev/null; sleep 2; ray stop --force > /dev/null 2>&1; pkill -x haproxy; sleep 1
  head -c 40000 /tmp/r/serve_$1.log > /tmp/r/serve_$1_head.log; grep -v "^\s*$" /tmp/r/serve_$1.log | tail -c 40000 > /tmp/r/serve_$1_tail.log; rm /tmp/r/serve_$1.log
  pack
}
service shipped /tmp/one.yaml 64,1
service never /tmp/never.yaml 1
ph done; pack
