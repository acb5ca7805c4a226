# Lease U, call 2b (call U2's machine; carry .gpurun): prod.yaml with deform_conv_channels_last on, compiled cold
# into the same compile cache (the prebuild of /tmp/one_dcl.yaml: both buckets, for `serve run` should it ship), the
# model alone in a Ray task as in call U2, accuracy on random weights with the setting on.
[ -f /tmp/r/model.json ] || { echo "not call U2's machine"; exit 1; }
source .gpurun/setup.sh; source .gpurun/oneyaml.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_u2b.txt; tar -C /tmp -czf $OUT/callU2b.tgz r; }
timeout 300 python3 -m serve_app.prebuild --address local --config /tmp/one_dcl.yaml > /tmp/r/prebuild_dcl.log 2>&1; ph "prebuild dcl exit $?"
grep -E '^\{' /tmp/r/prebuild_dcl.log | cut -c1-300; ray stop --force > /dev/null 2>&1; pack
timeout 150 python3 scripts/bench_model.py --in-ray-task /tmp/one_dcl.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
  --iterations 20 --profile --out /tmp/r/model_dcl.json > /tmp/r/model_dcl.log 2>&1; ph "model dcl exit $?"; ray stop --force > /dev/null 2>&1
grep -h "images_per_s" /tmp/r/model_dcl.log | cut -c1-300 | tail -2; pack
timeout $((560-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/hub --photo-dir /tmp/photos --candidates compiled_graphs:fp16 \
  --batch-size 8 --set deform_conv_channels_last=true --out /tmp/r/accuracy_random_dcl.json > /tmp/r/accuracy_random_dcl.log 2>&1; ph "accuracy random dcl exit $?"
tail -1 /tmp/r/accuracy_random_dcl.log | cut -c1-400; ph done; pack
