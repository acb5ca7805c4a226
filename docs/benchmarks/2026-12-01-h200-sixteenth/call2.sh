# Sixteenth session, call 2 (call 1's machine and compile cache): the service at 1 and 64 clients with execution
# compiled_graphs and png_threads 16 (call 1's A/B: encode 8.6 against 9.7 ms), then model-only b1/b8 in a Ray task.
[ -d /tmp/site/ray ] || source .gpurun/setup.sh
export PYTHONPATH=/tmp/site:$PWD:$PWD/scripts RAY_USAGE_STATS_ENABLED=0 PATH=/tmp/site/bin:$PATH
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
ls /tmp/cc | head -3 >> $OUT/phases.txt
ray stop --force > /dev/null 2>&1; pkill -x haproxy
timeout 420 python3 scripts/bench_service.py --config configs/prod.yaml --model-id import:birefnet_random:build --photo-dir .photos \
  --set-model execution=compiled_graphs --set-model graph_batch_sizes=[1,8] --set-model compile_cache_dir=/tmp/cc --set-model "compile_options={}" \
  --ingress-proxy haproxy --ingress-replicas 12 --remover-replicas 1 --ready-timeout 250 --levels 1,64 --duration 25 --warmup 5 \
  --set-ingress device_jpeg_decode=when_idle --set-ingress png_threads=16 --out $OUT/service.json > $OUT/service.log 2>&1; ph "service exit $?"
python3 -c "import json; r=json.load(open('$OUT/service.json')); print(r['ready_after_s'], r.get('startup')); print('model_after', {k: r.get('model_after', {}).get(k) for k in ('device_passes', 'batch_size_histogram')}); [print({k: l.get(k) for k in ('clients','images_per_s','latency_ms','server_stage_mean_ms','gpu_busy_fraction','gpu_sm_clock_mhz','batch_size_histogram','statuses_all_requests','images_per_s_sent_in_window')}) for l in r['levels']]" 2>&1 | cut -c1-1800
rm -rf /tmp/bench_service_*; ray stop --force > /dev/null 2>&1; pkill -x haproxy
timeout $((590-SECONDS)) python3 scripts/bench_model.py --in-ray-task configs/prod.yaml --model-id import:birefnet_random:build --precisions fp16 \
  --compile-cache-dir /tmp/cc --compile-options '{}' --modes compiled_graphs --batch-sizes 1,8 \
  --inputs photos --photo-dir $PWD/.photos --iterations 20 --out $OUT/model.json > $OUT/model.log 2>&1; ph "model exit $?"
python3 -c "import json; [print(r['mode'], r['execution'], r['batch_size'], r['ms_per_batch'], r['images_per_s'], r.get('gpu_sm_clock_mhz'), r.get('compile_warmup')) for r in json.load(open('$OUT/model.json'))['results']]" 2>&1 | tail -4
ray stop --force > /dev/null 2>&1; ph done
