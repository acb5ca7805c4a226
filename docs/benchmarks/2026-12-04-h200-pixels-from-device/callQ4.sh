# Lease Q, call 4 (call Q3's machine): the 12 MP load again on the base tree (.gpurun/base: `git archive main
# serve_app configs pyproject.toml`, its own prod.yaml with model_id only, its own prebuild: a cache hit when the
# model code is the same), 64 clients at 12 MP with CPU per process; then the offline bulk tool on the same 3,000
# photos with prod.yaml's model settings, its masks against the bulk client's; then the accuracy check.
[ -d /tmp/bulk/out-client ] || { echo "not call Q3's machine"; exit 1; }
source .gpurun/setup.sh; ROOT=$PWD; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_q4.txt; tar -C /tmp -czf $OUT/callQ4.tgz r; }
python3 -c "import yaml; c = yaml.safe_load(open('.gpurun/base/configs/prod.yaml')); c['applications'][0]['args']['model']['model_id'] = '/tmp/hub'; yaml.safe_dump(c, open('/tmp/base.yaml', 'w'), sort_keys=False)"
(cd .gpurun/base && PYTHONPATH=/tmp/site:$ROOT/.gpurun/base timeout 240 python3 -m serve_app.prebuild --address local \
  --config /tmp/base.yaml > /tmp/r/prebuild_base.log 2>&1); ph "base prebuild exit $?"; ray stop --force > /dev/null 2>&1
start=$(date +%s.%N); (cd .gpurun/base && PYTHONPATH=/tmp/site:$ROOT/.gpurun/base serve run /tmp/base.yaml > /tmp/r/serve_base.log 2>&1) &
for i in $(seq 1 1500); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "base readyz 200 after $ready s"
(timeout 80 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --photo-size 4000x3000 --photos 12 \
  --levels 64 --duration 30 --warmup 20 --out /tmp/r/service_12mp_base.json > /tmp/r/service_12mp_base.log 2>&1; ph "base 12 MP exit $?") &
sleep 30; python3 .gpurun/cpu_by_proc.py 20 > /tmp/r/cpu_12mp_base.json; wait %2; cat /tmp/r/cpu_12mp_base.json
grep -E "images/s" /tmp/r/service_12mp_base.log | cut -c1-250 | head -2
kill %1 2>/dev/null; sleep 2; ray stop --force > /dev/null 2>&1; pkill -x haproxy
grep -v "^\s*$" /tmp/r/serve_base.log | tail -c 20000 > /tmp/r/serve_base_tail.log; rm /tmp/r/serve_base.log; pack
timeout 300 python3 scripts/bench_bulk.py --mode offline --config configs/prod.yaml --model-id /tmp/hub --work-dir /tmp/bulk \
  --photos 3000 --photo-dir /tmp/photos --address local --compare-dir /tmp/bulk/out-client --compare-count 200 \
  --out /tmp/r/bulk_offline.json > /tmp/r/bulk_offline.log 2>&1; ph "bulk offline exit $?"
tail -c 1200 /tmp/r/bulk_offline.log; ray stop --force > /dev/null 2>&1; pack
timeout $((570-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/hub --photo-dir /tmp/photos --candidates compiled_graphs:fp16 \
  --batch-size 8 --out /tmp/r/accuracy.json > /tmp/r/accuracy.log 2>&1; ph "accuracy exit $?"
tail -5 /tmp/r/accuracy.log | cut -c1-400; ph done; pack
