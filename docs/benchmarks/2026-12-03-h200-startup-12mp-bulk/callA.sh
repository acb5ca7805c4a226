# Call A (fresh machine): host and versions, random weights beside the Hub's code, 3,000 bulk photos (background),
# the cold prebuild of prod.yaml's buckets into the default compile cache, then the model alone from that cache.
source .gpurun/setup.sh
{ nproc; lscpu | grep -i "model name"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, kornia, einops, ray; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'einops', einops.__version__, 'ray', ray.__version__)"; } > $OUT/host.txt 2>&1; cat $OUT/host.txt
sha256sum .hub-birefnet/birefnet.py .hub-birefnet/BiRefNet_config.py .hub-birefnet/config.json | tee -a $OUT/host.txt
python3 .hub-birefnet/make_random_dir.py /tmp/hub > $OUT/weights.log 2>&1; ph "weights exit $?"; tail -1 $OUT/weights.log
nohup python3 -c "from pathlib import Path; from serve_app.bench.photos import write_sample_photo_folder; write_sample_photo_folder('/tmp/bulk/in', 3000, photo_dir=Path('.photos').resolve(), workers=3)" > /tmp/photos.log 2>&1 &
timeout 330 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=/tmp/hub > $OUT/prebuild.log 2>&1; ph "prebuild exit $?"
grep '^{' $OUT/prebuild.log | cut -c1-600; grep -i "Traceback" -A8 $OUT/prebuild.log | head -20
ray stop --force > /dev/null 2>&1
timeout $((580-SECONDS)) python3 scripts/bench_model.py --in-ray-task configs/prod.yaml --model-id /tmp/hub \
  --photo-dir $PWD/.photos --iterations 20 --out $OUT/model.json > $OUT/model.log 2>&1; ph "model exit $?"
python3 -c "import json; [print(r['mode'], r['execution'], r['batch_size'], r['ms_per_batch'], r['images_per_s'], r.get('compile_warmup'), r.get('load_s')) for r in json.load(open('$OUT/model.json'))['results']]" 2>&1 | tail -4
grep -i "Traceback" -A8 $OUT/model.log | head -20
wait; cat /tmp/photos.log; find /tmp/bulk/in -name '*.jpg' | wc -l; du -sh /tmp/bulk/in
ray stop --force > /dev/null 2>&1; ph done
