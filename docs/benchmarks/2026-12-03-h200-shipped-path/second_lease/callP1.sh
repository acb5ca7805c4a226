# Probe 1 (fresh machine): the eager-bridge commit as shipped: readyz timeline, 64 and 1 clients; masks of 16 photos
# at idle; CPU seconds by process during the 12 MP load; the model's imports timed in a quiet process.
# It ran out its 600 s at `wait` below, which also waited for `serve run`; the records were copied off the machine
# afterwards (every step before it had finished).
source .gpurun/setup.sh; mkdir -p /tmp/r
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/r/weights.log 2>&1; ph "weights exit $?"
nohup python3 -c "from pathlib import Path; from serve_app.bench.photos import write_sample_photo_folder; write_sample_photo_folder('/tmp/maskphotos', 16, photo_dir=Path('.photos').resolve(), workers=2)" > /tmp/photos.log 2>&1 &
timeout 300 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=/tmp/hub > /tmp/r/prebuild.log 2>&1; ph "prebuild exit $?"
ray stop --force > /dev/null 2>&1
python3 -c "import time; t=time.time(); import serve_app.model.core; a=time.time(); from serve_app.model.loading import load_segmentation_module; m=load_segmentation_module('/tmp/hub'); print('quiet: imports %.1f s, module %.1f s' % (a-t, time.time()-a))" 2>/dev/null | tee -a $OUT/phases.txt
python3 -c "import yaml; c = yaml.safe_load(open('configs/prod.yaml')); c['applications'][0]['args']['model']['model_id'] = '/tmp/hub'; yaml.safe_dump(c, open('/tmp/prod.yaml', 'w'), sort_keys=False)"
start=$(date +%s.%N); serve run /tmp/prod.yaml > /tmp/r/serve.log 2>&1 &
for i in $(seq 1 2400); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "readyz 200 after $ready s"
timeout 130 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir .photos --levels 64,1 \
  --duration 30 --warmup 15 --serve-run-at $start --ready-after-s $ready --out /tmp/r/service.json > /tmp/r/service.log 2>&1; ph "service exit $?"
grep -E "images/s|p50" /tmp/r/service.log | cut -c1-300 | head -12
python3 .gpurun/maskdiff.py save $OUT/masks_never > /tmp/r/masks_never.log 2>&1; ph "masks exit $?"
timeout 100 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir .photos --photo-size 4000x3000 --photos 12 \
  --levels 64 --duration 30 --warmup 20 --out /tmp/r/service_12mp.json > /tmp/r/service_12mp.log 2>&1 &
sleep 24; python3 .gpurun/cpu_by_proc.py 20 | tee /tmp/r/cpu_12mp.json; wait; ph "12 MP done"
grep -E "images/s" /tmp/r/service_12mp.log | cut -c1-300 | head -3
curl -s http://127.0.0.1:8000/v1/info > /tmp/r/info_after.json
kill %1 2>/dev/null; sleep 2; ray stop --force > /dev/null 2>&1; pkill -x haproxy
cp $OUT/phases.txt /tmp/r/; grep -v "^\s*$" /tmp/r/serve.log | head -c 60000 > /tmp/r/serve_head.log; rm /tmp/r/serve.log
tar -C /tmp -czf $OUT/callP1.tgz r; ph done
