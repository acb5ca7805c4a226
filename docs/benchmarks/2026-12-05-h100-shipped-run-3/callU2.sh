# Lease U, call 2 (call U1's machine; carry .gpurun): the cold prebuild of prod.yaml's buckets (Triton's tile
# timings written to the compile cache), the model alone in a Ray task as the replica runs it (batch 8 and 1, with a
# profile), accuracy of the shipped execution against eager fp32 on random weights.
[ -f /tmp/one.yaml ] || { echo "not call U1's machine"; exit 1; }
source .gpurun/setup.sh; source .gpurun/oneyaml.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_u2.txt; tar -C /tmp -czf $OUT/callU2.tgz r; }
(timeout 400 python3 -c "from pathlib import Path; from harness.photos import write_sample_photo_folder; write_sample_photo_folder('/tmp/bulk/in', 3000, photo_dir=Path('/tmp/photos'), workers=4)" > /tmp/r/photos.log 2>&1; ph "photos exit $?") &
timeout 420 python3 -m serve_app.prebuild --address local --config /tmp/one.yaml > /tmp/r/prebuild.log 2>&1; ph "prebuild exit $?"
grep -E '^\{' /tmp/r/prebuild.log | cut -c1-300; ray stop --force > /dev/null 2>&1
find ~/.cache/serve_app/compiled/triton -name "*.autotune.json" | wc -l; pack
timeout 200 python3 scripts/bench_model.py --in-ray-task /tmp/one.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
  --iterations 20 --profile --out /tmp/r/model.json > /tmp/r/model.log 2>&1; ph "model exit $?"; ray stop --force > /dev/null 2>&1
grep -h "images_per_s" /tmp/r/model.log | cut -c1-300 | tail -2; pack
timeout $((575-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/hub --photo-dir /tmp/photos --candidates compiled_graphs:fp16 \
  --batch-size 8 --out /tmp/r/accuracy_random.json > /tmp/r/accuracy_random.log 2>&1; ph "accuracy random exit $?"
tail -3 /tmp/r/accuracy_random.log | cut -c1-400; wait; ls /tmp/bulk/in | wc -l; ph done; pack
