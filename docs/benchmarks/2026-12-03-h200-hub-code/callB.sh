# Call B (call A's machine, warm compile cache): `serve run` of prod.yaml as shipped but for model_id, /readyz timed
# from the command's start; 64 closed-loop clients from 20 s after the load starts, then 1 client; replica states.
[ -d /tmp/site/ray ] || { echo "not call A's machine"; exit 1; }
source .gpurun/setup.sh
ray stop --force > /dev/null 2>&1
python3 -c "import yaml; c = yaml.safe_load(open('configs/prod.yaml')); c['applications'][0]['args']['model']['model_id'] = '/tmp/hub'; yaml.safe_dump(c, open('/tmp/prod.yaml', 'w'), sort_keys=False)"
diff <(python3 -c "import yaml; print(yaml.safe_dump(yaml.safe_load(open('configs/prod.yaml'))))") <(python3 -c "import yaml; print(yaml.safe_dump(yaml.safe_load(open('/tmp/prod.yaml'))))") | tee $OUT/config_diff.txt
start=$SECONDS; serve run /tmp/prod.yaml > $OUT/serve.log 2>&1 &
for i in $(seq 1 600); do sleep 0.5; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
ph "readyz 200 after $((SECONDS-start)) s (0.5 s polls)"
python3 .gpurun/replicas.py > $OUT/replicas_ready.json 2>/dev/null; cat $OUT/replicas_ready.json
timeout $((560-SECONDS)) python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir .photos --levels 64,1 \
  --duration 40 --warmup 20 --out $OUT/service.json > $OUT/service.log 2>&1; ph "service exit $?"
python3 .gpurun/replicas.py > $OUT/replicas_after.json 2>/dev/null; cat $OUT/replicas_after.json
serve status > $OUT/serve_status.txt 2>&1; head -40 $OUT/serve_status.txt
python3 -c "import json; r=json.load(open('$OUT/service.json')); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','server_stage_mean_ms','outside_ingress_stages','gpu_busy_fraction','batch_size_histogram','statuses_all_requests')}) for l in r['levels']]" 2>&1 | cut -c1-1800
grep -c "taken more than 30s to be scheduled" $OUT/serve.log
kill %1; sleep 3; ray stop --force > /dev/null 2>&1; ph done
