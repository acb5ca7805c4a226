# Lease X, call 2 (call X1's machine; carry .gpurun): deform_bn_relu_concat on (dbrc16), then also inductor's
# coordinate-descent tuning (all16), each prebuilt (buckets 1, 8, 16) and timed alone in a Ray task as in call X1;
# all16's accuracy against eager fp32 at batch 16, on random and on the trained weights.
[ -f /tmp/r/train.json ] || { echo "not call X1's machine"; exit 1; }
source .gpurun/setup.sh; source .gpurun/oneyaml.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_x2.txt; tar -C /tmp -czf $OUT/callX2.tgz r; }
for v in dbrc16 all16; do
  cp /tmp/$v.yaml /tmp/r/$v.yaml
  timeout $([ $v = dbrc16 ] && echo 200 || echo 260) python3 -m serve_app.prebuild --address local --config /tmp/$v.yaml > /tmp/r/prebuild_$v.log 2>&1; ph "prebuild $v exit $?"
  grep -E '^\{' /tmp/r/prebuild_$v.log | cut -c1-300; ray stop --force > /dev/null 2>&1; pack
  timeout 100 python3 scripts/bench_model.py --in-ray-task /tmp/$v.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
    --iterations 20 --profile --out /tmp/r/model_$v.json > /tmp/r/model_$v.log 2>&1; ph "model $v exit $?"; ray stop --force > /dev/null 2>&1
  grep -ho '"batch_size": [0-9]*, "ms_per_batch": [0-9.]*, "images_per_s": [0-9.]*' /tmp/r/model_$v.log | tail -3; pack
done
CDT='{"coordinate_descent_tuning": true}'
timeout 150 python3 scripts/check_accuracy.py --model-id /tmp/hub --photo-dir /tmp/photos --candidates compiled_graphs:fp16 \
  --batch-size 8 --set deform_bn_relu_concat=true --compile-options "$CDT" --out /tmp/r/accuracy_random_all16.json > /tmp/r/accuracy_random_all16.log 2>&1; ph "accuracy random all16 exit $?"
tail -1 /tmp/r/accuracy_random_all16.log | cut -c1-500; pack
[ -d /tmp/trained ] && timeout $((580-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/trained --photo-dir /tmp/photos --candidates compiled_graphs:fp16 \
  --batch-size 8 --set deform_bn_relu_concat=true --compile-options "$CDT" --out /tmp/r/accuracy_trained_all16.json > /tmp/r/accuracy_trained_all16.log 2>&1; ph "accuracy trained all16 exit $?"
tail -3 /tmp/r/accuracy_trained_all16.log | cut -c1-400; ph done; pack
