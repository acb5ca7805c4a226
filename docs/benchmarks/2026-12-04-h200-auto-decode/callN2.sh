# Lease N, call 2 (call N1's machine): the Ray kit, a cold prebuild, the model alone.
[ -d /tmp/bulk/in ] || { echo "not call N1's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r; ph "setup done"
pack() { cp $OUT/phases.txt /tmp/r/phases_n2.txt; tar -C /tmp -czf $OUT/callN2.tgz r; }
timeout 240 python3 -m serve_app.prebuild --address local --config /tmp/one.yaml > /tmp/r/prebuild.log 2>&1; ph "prebuild exit $?"
grep -E '^\{' /tmp/r/prebuild.log | cut -c1-300; ray stop --force > /dev/null 2>&1; pack
timeout 150 python3 scripts/bench_model.py --in-ray-task /tmp/one.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
  --iterations 20 --out /tmp/r/model.json > /tmp/r/model.log 2>&1; ph "model exit $?"; ray stop --force > /dev/null 2>&1
grep -h "images_per_s" /tmp/r/model.log | cut -c1-300 | tail -2; ph done; pack
