# Lease H, call 2 (call H1's machine): the Ray kit, the 3,000 bulk photos written in the background, a cold
# prebuild, the model alone; then the CPU ceiling of the ingress's work on 12 MP photos (no model, no Ray).
[ -f /tmp/one.yaml ] || { echo "not call H1's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r; ph "setup done"; cp /tmp/host_pyc.txt /tmp/r/
pack() { cp $OUT/phases.txt /tmp/r/phases_h2.txt; tar -C /tmp -czf $OUT/callH2.tgz r; }
nohup python3 -c "from pathlib import Path; from harness.photos import write_sample_photo_folder; write_sample_photo_folder('/tmp/bulk/in', 3000, photo_dir=Path('/tmp/photos'), workers=3)" > /tmp/r/photos.log 2>&1 &
timeout 240 python3 -m serve_app.prebuild --address local --config /tmp/one.yaml > /tmp/r/prebuild.log 2>&1; ph "prebuild exit $?"
grep -E '^\{' /tmp/r/prebuild.log | cut -c1-300; ray stop --force > /dev/null 2>&1; wait; ph "photos written"; pack
timeout 150 python3 scripts/bench_model.py --in-ray-task /tmp/one.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
  --iterations 20 --out /tmp/r/model.json > /tmp/r/model.log 2>&1; ph "model exit $?"; ray stop --force > /dev/null 2>&1
grep -h "images_per_s" /tmp/r/model.log | cut -c1-300 | tail -2; pack
c() { name=$1; shift; timeout 100 python3 scripts/bench_codec.py --photo-dir /tmp/photos --photo-size 4000x3000 --duration 8 \
  --out /tmp/r/codec_$name.json "$@" > /tmp/r/codec_$name.log 2>&1; ph "codec $name exit $?"; cut -c1-250 /tmp/r/codec_$name.log; pack; }
c all --processes 16
c ingress_striped --processes 12 --per-process 4 --png-threads 16
c ingress_one_thread --processes 12 --per-process 4 --png-threads 1
ph done; pack
