# Lease H, call 5: the commit before the one-layer batching (its own prebuild, started from its own folder),
# 64 and 1 clients; then this commit's prod.yaml with device_jpeg_decode: never, 1 client.
[ -f /tmp/never.yaml ] || { echo "not call H1's machine"; exit 1; }
source .gpurun/setup.sh; ROOT=$PWD; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_h5.txt; tar -C /tmp -czf $OUT/callH5.tgz r; }
(cd .gpurun/before && PYTHONPATH=/tmp/site:$ROOT/.gpurun/before timeout 240 python3 -m serve_app.prebuild --address local \
  --config configs/prod.yaml --set model_id=/tmp/hub > /tmp/r/prebuild_before.log 2>&1); ph "before prebuild exit $?"; ray stop --force > /dev/null 2>&1; pack
service() {  # $1 = name, $2 = config, $3 = folder (cwd and PYTHONPATH head), $4 = levels
  start=$(date +%s.%N); (cd $3 && PYTHONPATH=/tmp/site:$3 serve run $2 > /tmp/r/serve_$1.log 2>&1) &
  for i in $(seq 1 1500); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
  ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "$1 readyz 200 after $ready s"
  timeout 130 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --levels $4 \
    --duration 30 --warmup 15 --serve-run-at $start --ready-after-s $ready --out /tmp/r/service_$1.json > /tmp/r/service_$1.log 2>&1; ph "$1 service exit $?"
  grep -E "images/s|p50" /tmp/r/service_$1.log | cut -c1-330 | head -4
  kill %1 2>/dev/null; sleep 2; ray stop --force > /dev/null 2>&1; pkill -x haproxy; sleep 1
  grep -v "^\s*$" /tmp/r/serve_$1.log | tail -c 30000 > /tmp/r/serve_$1_tail.log; rm /tmp/r/serve_$1.log; pack
}
python3 -c "import yaml; c = yaml.safe_load(open('.gpurun/before/configs/prod.yaml')); c['applications'][0]['args']['model']['model_id'] = '/tmp/hub'; yaml.safe_dump(c, open('/tmp/before.yaml', 'w'), sort_keys=False)"
service before /tmp/before.yaml $ROOT/.gpurun/before 64,1
service never /tmp/never.yaml $ROOT 1
ph done; pack
