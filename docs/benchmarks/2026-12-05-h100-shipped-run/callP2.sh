# Lease P, call 2 (call P1's machine; carry .gpurun): the cold prebuild of prod.yaml's buckets (Triton's tile
# timings written to the compile cache), the model alone in a Ray task as the replica runs it (batch 8 and 1, with a
# profile), accuracy of the shipped execution against eager fp32 on random weights.
[ -f /tmp/one.yaml ] || { echo "not call P1's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/p; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/p/phases_p2.txt; tar -C /tmp -czf $OUT/callP2.tgz p; }
timeout 420 python3 -m serve_app.prebuild --address local --config /tmp/one.yaml > /tmp/p/prebuild.log 2>&1; ph "prebuild exit $?"
grep -E '^\{' /tmp/p/prebuild.log | cut -c1-300; ray stop --force > /dev/null 2>&1
find ~/.cache/serve_app/compiled/triton -name "*.autotune.json" | wc -l; pack
timeout 200 python3 scripts/bench_model.py --in-ray-task /tmp/one.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
  --iterations 20 --profile --out /tmp/p/model.json > /tmp/p/model.log 2>&1; ph "model exit $?"; ray stop --force > /dev/null 2>&1
grep -h "images_per_s" /tmp/p/model.log | cut -c1-300 | tail -2; pack
timeout $((575-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/hub --photo-dir /tmp/photos --candidates compiled_graphs:fp16 \
  --batch-size 8 --out /tmp/p/accuracy_random.json > /tmp/p/accuracy_random.log 2>&1; ph "accuracy random exit $?"
tail -3 /tmp/p/accuracy_random.log | cut -c1-400; ph done; pack
