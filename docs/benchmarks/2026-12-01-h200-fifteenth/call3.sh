# Fifteenth session, call 3 (fresh machine): execution compiled_graphs (compiled without inductor's CUDA graphs, each
# bucket captured whole in one CUDA graph of the project's own). Accuracy against eager fp32 on 50 photos (its own
# compile of bucket 8) beside the cold prebuild (buckets 1 and 8); then model-only in a Ray task, b1/b8 on photos with
# --serving-path, lone requests and their trace.
source .gpurun/setup.sh
ph() { echo "$1 at $SECONDS s" | tee -a $OUT/phases.txt; }
( timeout 330 python3 scripts/check_accuracy.py --model-id import:birefnet_random:build --photo-dir $PWD/.photos --photos 50 \
  --candidates compiled_graphs:fp16 --batch-size 8 --compile-cache-dir /tmp/cc_acc --compile-options '{}' \
  --out $OUT/accuracy.json > $OUT/accuracy.log 2>&1; ph "accuracy exit $?" ) &
timeout 300 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=import:birefnet_random:build \
  --set execution=compiled_graphs --set compile_cache_dir=/tmp/cc --set "graph_batch_sizes=[1, 8]" --set "compile_options={}" > $OUT/prebuild.log 2>&1; ph "prebuild exit $?"
grep '^{' $OUT/prebuild.log | cut -c1-300; grep -i "error\|Traceback" $OUT/prebuild.log | head -5
ray stop --force > /dev/null 2>&1
wait; grep '^{' $OUT/accuracy.log | cut -c1-400; grep -i "error\|Traceback" $OUT/accuracy.log | head -5
timeout $((585-SECONDS)) python3 scripts/bench_model.py --in-ray-task configs/prod.yaml --model-id import:birefnet_random:build --precisions fp16 \
  --compile-cache-dir /tmp/cc --compile-options '{}' --modes compiled_graphs --batch-sizes 1,8 \
  --inputs photos --serving-path --lone-trace $OUT/lone_trace.json --photo-dir $PWD/.photos --iterations 40 --out $OUT/model.json > $OUT/model.log 2>&1; ph "model exit $?"
python3 -c "import json; [print(r['mode'], r['execution'], r['batch_size'], r['ms_per_batch'], r['images_per_s'], r.get('serving_path_ms_per_batch'), r.get('serving_path_images_per_s'), r.get('gpu_sm_clock_mhz'), r.get('compile_warmup'), {k: v for k, v in r.items() if k.startswith('lone')}) for r in json.load(open('$OUT/model.json'))['results']]" 2>&1 | tail -8
grep -i "Traceback\|Error" $OUT/model.log | head -5
gzip -f $OUT/lone_trace.json 2>/dev/null; ls -la $OUT
ray stop --force > /dev/null 2>&1; ph done
