# Lease U, call 5 (call U4's machine; carry .gpurun): the model alone with and without deform_conv_channels_last,
# alternated twice, 40 iterations each, from the warm compile cache (both prebuilt in calls U2 and U2b).
[ -f /tmp/r/model_dcl.json ] || { echo "not call U2b's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
for i in 1 2; do for c in one one_dcl; do
  timeout 70 python3 scripts/bench_model.py --in-ray-task /tmp/$c.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
    --iterations 40 --out /tmp/r/ab_${c}_$i.json > /tmp/r/ab_${c}_$i.log 2>&1; ph "$c $i exit $?"; ray stop --force > /dev/null 2>&1
  grep -ho '"batch_size": [0-9]*, "ms_per_batch": [0-9.]*, "images_per_s": [0-9.]*' /tmp/r/ab_${c}_$i.log | tail -2
  [ $SECONDS -gt 250 ] && break 2
done; done
tar -C /tmp -czf $OUT/callU5.tgz r/ab_*
