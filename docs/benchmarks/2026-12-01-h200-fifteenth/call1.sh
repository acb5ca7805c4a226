# Fifteenth session, call 1 (fresh machine): host CPU facts and the PNG encoder before/after this session's change
# (pieces instead of joins on the stripes' threads), then the cold prebuild (compiled + triton.cudagraphs, buckets 1
# and 8), then model-only in a Ray task: eager and compiled at batch 1 and 8 on the photos with --serving-path, the
# batch-1 rows also timing lone requests (device JPEG decode + pass + masks, as DeviceQueue.run_alone) and writing a
# profiler trace of three of them (--lone-trace).
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
CG='compile_options={"triton.cudagraphs": true}'
{ lscpu | grep -E "^(Model name|CPU\(s\)|Thread|Core|Socket|NUMA node\(s\)|CPU max MHz|L3)"; nproc; free -g | head -2; } > $OUT/host.txt 2>&1; cat $OUT/host.txt
timeout 90 python3 .gpurun/probe_png.py > $OUT/probe_png.log 2>&1; ph "probe_png exit $?"; cat $OUT/probe_png.log
timeout 270 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=import:birefnet_random:build \
  --set execution=compiled --set compile_cache_dir=/tmp/cc --set "graph_batch_sizes=[1, 8]" --set "$CG" > $OUT/prebuild.log 2>&1; ph "prebuild exit $?"
grep '^{' $OUT/prebuild.log | cut -c1-300
ray stop --force > /dev/null 2>&1
timeout $((585-SECONDS)) python3 scripts/bench_model.py --in-ray-task configs/prod.yaml --model-id import:birefnet_random:build --precisions fp16 \
  --compile-cache-dir /tmp/cc --compile-options '{"triton.cudagraphs": true}' --modes eager,compiled --batch-sizes 1,8 \
  --inputs photos --serving-path --lone-trace $OUT/lone_trace.json --photo-dir $PWD/.photos --iterations 40 --out $OUT/model.json > $OUT/model.log 2>&1; ph "model exit $?"
python3 -c "import json; [print(r['mode'], r['batch_size'], r['ms_per_batch'], r['images_per_s'], r.get('serving_path_ms_per_batch'), r.get('serving_path_images_per_s'), r.get('gpu_sm_clock_mhz'), {k: v for k, v in r.items() if k.startswith('lone')}) for r in json.load(open('$OUT/model.json'))['results']]" 2>&1 | tail -8
gzip -f $OUT/lone_trace_*.json 2>/dev/null; ls -la $OUT
ray stop --force > /dev/null 2>&1; ph done
