# Lease R, call 5 (call R4's machine; carry .gpurun), only with budget left: the model alone without
# conv_before_upsample (compiled cold into a cache of its own), beside call R2's figure with it.
[ -f /tmp/r/model.json ] || { echo "not call R4's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
timeout 400 python3 scripts/bench_model.py --in-ray-task /tmp/one.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
  --iterations 20 --set conv_before_upsample=false --compile-cache-dir /tmp/cache-without --batch-sizes 8 \
  --out /tmp/r/model_without_rewrite.json > /tmp/r/model_without_rewrite.log 2>&1; ph "model without exit $?"
grep -h "images_per_s" /tmp/r/model_without_rewrite.log | cut -c1-300 | tail -1
cp $OUT/phases.txt /tmp/r/phases_r5.txt; tar -C /tmp -czf $OUT/callR5.tgz r
