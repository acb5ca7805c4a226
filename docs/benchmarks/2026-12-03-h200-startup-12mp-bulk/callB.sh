# Call B (call A's machine, warm compile cache): `serve run` of prod.yaml as shipped but for model_id, /readyz timed
# from the command's start; 64 closed-loop clients (mixed 0.6-6 MP) from 20 s after the load starts, 1 client,
# 64 clients on 12 MP photos; the bulk client at its default 64 in flight on 3,000 photos; replica states.
[ -d /tmp/site/ray ] || { echo "not call A's machine"; exit 1; }
source .gpurun/setup.sh
ray stop --force > /dev/null 2>&1
python3 -c "import yaml; c = yaml.safe_load(open('configs/prod.yaml')); c['applications'][0]['args']['model']['model_id'] = '/tmp/hub'; yaml.safe_dump(c, open('/tmp/prod.yaml', 'w'), sort_keys=False)"
diff <(python3 -c "import yaml; print(yaml.safe_dump(yaml.safe_load(open('configs/prod.yaml'))))") <(python3 -c "import yaml; print(yaml.safe_dump(yaml.safe_load(open('/tmp/prod.yaml'))))") | tee $OUT/config_diff.txt
start=$(date +%s.%N); serve run /tmp/prod.yaml > $OUT/serve.log 2>&1 &
for i in $(seq 1 2400); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "readyz 200 after $ready s"
python3 .gpurun/replicas.py > $OUT/replicas_ready.json 2>/dev/null; cat $OUT/replicas_ready.json
timeout $((590-SECONDS)) python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir .photos --levels 64,1 \
  --duration 40 --warmup 20 --serve-run-at $start --ready-after-s $ready --out $OUT/service.json > $OUT/service.log 2>&1; ph "service exit $?"
python3 -c "import json; r=json.load(open('$OUT/service.json')); print(r.get('startup')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','server_stage_mean_ms','outside_ingress_stages','gpu_busy_fraction','batch_size_histogram','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-1500
timeout $((590-SECONDS)) python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir .photos --photo-size 4000x3000 --photos 12 \
  --levels 64 --duration 40 --warmup 20 --out $OUT/service_12mp.json > $OUT/service_12mp.log 2>&1; ph "service 12 MP exit $?"
python3 -c "import json; r=json.load(open('$OUT/service_12mp.json')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','server_stage_mean_ms','gpu_busy_fraction','batch_size_histogram','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-1500
timeout $((590-SECONDS)) python3 scripts/bench_bulk.py --mode client --url http://127.0.0.1:8000 --work-dir /tmp/bulk --photos 3000 \
  --photo-dir .photos --compare-url http://127.0.0.1:8000 --out $OUT/bulk_client.json > $OUT/bulk_client.log 2>&1; ph "bulk client exit $?"
tail -3 $OUT/bulk_client.log
python3 .gpurun/replicas.py > $OUT/replicas_after.json 2>/dev/null; cat $OUT/replicas_after.json
grep -c "taken more than 30s to be scheduled" $OUT/serve.log; grep "Adding\|Removing\|taken more" $OUT/serve.log | cut -c1-200 > $OUT/serve_scaling.log
kill %1; sleep 3; ray stop --force > /dev/null 2>&1; ph done
