# Lease V, call 3 (call V2's machine): the 12 MP load on main's tree (.gpurun/base: `git archive main serve_app
# configs pyproject.toml`) in the same run, and 1 client on the mixed photos there, the model alone at batch 8 and 1 (the ratio's denominator), then the
# GPU tier's service test of the device-written cut-out.
[ -f /tmp/v/prebuild.log ] || { echo "not call V2's machine"; exit 1; }
source .gpurun/setup.sh; ROOT=$PWD; mkdir -p /tmp/v; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/v/phases_v3.txt; tar -C /tmp -czf $OUT/callV3.tgz v; }
python3 -c "import yaml; c = yaml.safe_load(open('.gpurun/base/configs/prod.yaml')); c['applications'][0]['args']['model']['model_id'] = '/tmp/hub'; yaml.safe_dump(c, open('/tmp/base.yaml', 'w'), sort_keys=False)"
start=$(date +%s.%N); (cd .gpurun/base && PYTHONPATH=/tmp/site:$ROOT/.gpurun/base serve run /tmp/base.yaml > /tmp/v/serve_base.log 2>&1) &
for i in $(seq 1 1500); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
ph "base readyz after $(python3 -c "import time; print(round(time.time() - $start, 1))") s"
(timeout 80 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --photo-size 4000x3000 --photos 12 \
  --levels 64 --duration 30 --warmup 20 --out /tmp/v/service_12mp_base.json > /tmp/v/service_12mp_base.log 2>&1; ph "base 12 MP exit $?") &
sleep 30; python3 .gpurun/cpu_by_proc.py 20 > /tmp/v/cpu_12mp_base.json; wait %2; cat /tmp/v/cpu_12mp_base.json
grep -E "images/s" /tmp/v/service_12mp_base.log | cut -c1-300 | head -2
timeout 70 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --levels 1 \
  --duration 30 --warmup 10 --out /tmp/v/service_1_base.json > /tmp/v/service_1_base.log 2>&1; ph "base 1 client exit $?"
grep -E "p50" /tmp/v/service_1_base.log | cut -c1-300 | head -2
kill %1 2>/dev/null; sleep 2; ray stop --force > /dev/null 2>&1; pkill -x haproxy; rm -f /tmp/v/serve_base.log; pack
timeout 150 python3 scripts/bench_model.py --in-ray-task /tmp/one.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
  --iterations 20 --out /tmp/v/model.json > /tmp/v/model.log 2>&1; ph "model exit $?"; ray stop --force > /dev/null 2>&1
grep -h "images_per_s" /tmp/v/model.log | cut -c1-300 | tail -2; pack
timeout $((570-SECONDS)) python3 -m pytest -n 0 -p no:cacheprovider -m gpu tests/gpu/test_cutout_on_device.py -q -rA > /tmp/v/gpu_cutout.log 2>&1
ph "gpu cut-out test exit $?"; tail -3 /tmp/v/gpu_cutout.log; ph done; pack
