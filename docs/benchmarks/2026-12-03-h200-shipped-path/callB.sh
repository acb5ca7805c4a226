# Call B (call A's machine): serve run as shipped (HAProxy by its config); readyz and its timeline; 64 and 1
# clients (mixed); 64 at 12 MP; the bulk client.
[ -d /tmp/site/ray ] || { echo "not call A's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r
ray stop --force > /dev/null 2>&1
python3 -c "import yaml; c = yaml.safe_load(open('configs/prod.yaml')); c['applications'][0]['args']['model']['model_id'] = '/tmp/hub'; yaml.safe_dump(c, open('/tmp/prod.yaml', 'w'), sort_keys=False)"
diff <(python3 -c "import yaml,json; print(json.dumps(yaml.safe_load(open('configs/prod.yaml')), indent=1, sort_keys=True))") <(python3 -c "import yaml,json; print(json.dumps(yaml.safe_load(open('/tmp/prod.yaml')), indent=1, sort_keys=True))") > /tmp/r/config_diff.txt
start=$(date +%s.%N); serve run /tmp/prod.yaml > /tmp/r/serve.log 2>&1 &
for i in $(seq 1 2400); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "readyz 200 after $ready s"
python3 .gpurun/replicas.py > /tmp/r/replicas_ready.json 2>/dev/null
timeout 130 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir .photos --levels 64,1 \
  --duration 30 --warmup 15 --serve-run-at $start --ready-after-s $ready --out /tmp/r/service.json > /tmp/r/service.log 2>&1; ph "service exit $?"
grep -E "images/s|p50" /tmp/r/service.log | cut -c1-300 | head -12
timeout 100 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir .photos --photo-size 4000x3000 --photos 12 \
  --levels 64 --duration 30 --warmup 20 --out /tmp/r/service_12mp.json > /tmp/r/service_12mp.log 2>&1; ph "12 MP exit $?"
grep -E "images/s" /tmp/r/service_12mp.log | cut -c1-300 | head -3
timeout $((575-SECONDS)) python3 scripts/bench_bulk.py --mode client --url http://127.0.0.1:8000 --work-dir /tmp/bulk --photos 3000 \
  --photo-dir .photos --compare-url http://127.0.0.1:8000 --out /tmp/r/bulk_client.json > /tmp/r/bulk_client.log 2>&1; ph "bulk client exit $?"
python3 .gpurun/replicas.py > /tmp/r/replicas_after.json 2>/dev/null; curl -s http://127.0.0.1:8000/v1/info > /tmp/r/info_after.json
kill %1; sleep 2; ray stop --force > /dev/null 2>&1; pkill -x haproxy
cp $OUT/phases.txt /tmp/r/; head -c 100000 /tmp/r/serve.log > /tmp/r/serve_head.log; grep -v "^\s*$" /tmp/r/serve.log | tail -c 100000 > /tmp/r/serve_tail.log; rm /tmp/r/serve.log
tar -C /tmp -czf $OUT/callB.tgz r; ph done
