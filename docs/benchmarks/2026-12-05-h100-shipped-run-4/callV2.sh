# Lease V, call 2 (call V1's machine; carry .gpurun): the cold prebuild of prod.yaml's buckets, the model alone in a
# Ray task as the replica runs it (batch 8 and 1, with a profile); gelu_in_matmul on, compiled cold into the same
# cache, the model alone with it and its accuracy on random weights.
[ -f /tmp/one.yaml ] || { echo "not call V1's machine"; exit 1; }
source .gpurun/setup.sh; source .gpurun/oneyaml.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_v2.txt; tar -C /tmp -czf $OUT/callV2.tgz r; }
timeout 240 python3 -m serve_app.prebuild --address local --config /tmp/one.yaml > /tmp/r/prebuild.log 2>&1; ph "prebuild exit $?"
grep -E '^\{' /tmp/r/prebuild.log | cut -c1-300; ray stop --force > /dev/null 2>&1
find ~/.cache/serve_app/compiled/triton -name "*.autotune.json" | wc -l; pack
timeout 90 python3 scripts/bench_model.py --in-ray-task /tmp/one.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
  --iterations 20 --profile --out /tmp/r/model.json > /tmp/r/model.log 2>&1; ph "model exit $?"; ray stop --force > /dev/null 2>&1
grep -ho '"batch_size": [0-9]*, "ms_per_batch": [0-9.]*, "images_per_s": [0-9.]*' /tmp/r/model.log | tail -2; pack
timeout 200 python3 -m serve_app.prebuild --address local --config /tmp/one_gelu.yaml > /tmp/r/prebuild_gelu.log 2>&1; ph "prebuild gelu exit $?"
grep -E '^\{' /tmp/r/prebuild_gelu.log | cut -c1-300; ray stop --force > /dev/null 2>&1; pack
timeout 90 python3 scripts/bench_model.py --in-ray-task /tmp/one_gelu.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
  --iterations 20 --profile --out /tmp/r/model_gelu.json > /tmp/r/model_gelu.log 2>&1; ph "model gelu exit $?"; ray stop --force > /dev/null 2>&1
grep -ho '"batch_size": [0-9]*, "ms_per_batch": [0-9.]*, "images_per_s": [0-9.]*' /tmp/r/model_gelu.log | tail -2; pack
timeout $((575-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/hub --photo-dir /tmp/photos --candidates compiled_graphs:fp16 \
  --batch-size 8 --set gelu_in_matmul=true --out /tmp/r/accuracy_random_gelu.json > /tmp/r/accuracy_random_gelu.log 2>&1; ph "accuracy random gelu exit $?"
tail -1 /tmp/r/accuracy_random_gelu.log | cut -c1-500; ph done; pack
