# Lease M, call 2 (call M1's machine; carry .gpurun .ort1): the cold prebuild of prod.yaml's buckets (Triton's tile
# timings written to the compile cache), the model alone in a Ray task as the replica runs it (batch 8 and 1, with a
# profile), accuracy of the shipped execution against eager fp32 on random weights.
[ -f /tmp/one.yaml ] || { echo "not call M1's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/m /tmp/ortp; cp .ort1/* /tmp/ortp/; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/m/phases_m2.txt; tar -C /tmp -czf $OUT/callM2.tgz m; }
timeout 420 python3 -m serve_app.prebuild --address local --config /tmp/one.yaml > /tmp/m/prebuild.log 2>&1; ph "prebuild exit $?"
grep -E '^\{' /tmp/m/prebuild.log | cut -c1-300; ray stop --force > /dev/null 2>&1
find ~/.cache/serve_app/compiled/triton -name "*.autotune.json" | wc -l; pack
timeout 200 python3 scripts/bench_model.py --in-ray-task /tmp/one.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
  --iterations 20 --profile --out /tmp/m/model.json > /tmp/m/model.log 2>&1; ph "model exit $?"; ray stop --force > /dev/null 2>&1
grep -h "images_per_s" /tmp/m/model.log | cut -c1-300 | tail -2; pack
timeout $((575-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/hub --photo-dir /tmp/photos --candidates compiled_graphs:fp16 \
  --batch-size 8 --out /tmp/m/accuracy_random.json > /tmp/m/accuracy_random.log 2>&1; ph "accuracy random exit $?"
tail -3 /tmp/m/accuracy_random.log | cut -c1-400; ph done; pack
