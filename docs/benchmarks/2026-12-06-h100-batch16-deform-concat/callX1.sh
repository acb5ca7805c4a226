# Lease X, call 1 (fresh machine; carry .whl .devkit .gpurun .hub-birefnet): host, random weights, the configs, 3,000
# bulk photos on the CPUs meanwhile; the GPU tests of the Triton kernels (deform_bn_relu_concat's among them); the
# cold prebuild of prod.yaml's settings with buckets 1, 8 and 16 (max_batch_size 16); the model alone from them in a
# Ray task (batch 1, 8, 16, profile of 16); weights with structure trained on the GPU (3 minutes).
source .gpurun/setup.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_x1.txt; tar -C /tmp -czf $OUT/callX1.tgz r; }
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, kornia, PIL, triton, ray; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'pillow', PIL.__version__, 'triton', triton.__version__, 'ray', ray.__version__, 'cudnn', torch.backends.cudnn.version())"
  sha256sum .hub-birefnet/birefnet.py; cat .gpurun/commit.txt; } > /tmp/r/host.txt 2>&1; cat /tmp/r/host.txt
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/r/weights.log 2>&1; ph "weights exit $?"
source .gpurun/oneyaml.sh; cp /tmp/one16.yaml /tmp/r/one16.yaml
(timeout 400 nice -n 19 python3 -c "from pathlib import Path; from harness.photos import write_sample_photo_folder; write_sample_photo_folder('/tmp/bulk/in', 3000, photo_dir=Path('/tmp/photos'), workers=2)" > /tmp/r/photos.log 2>&1; ph "photos exit $?") &
timeout 150 python3 -m pytest -n 0 -q -p no:cacheprovider -m gpu tests/gpu/test_triton_kernels.py > /tmp/r/gpu_tests.log 2>&1; ph "gpu tests exit $?"
tail -3 /tmp/r/gpu_tests.log | cut -c1-300; pack
timeout 240 python3 -m serve_app.prebuild --address local --config /tmp/one16.yaml > /tmp/r/prebuild_one16.log 2>&1; ph "prebuild one16 exit $?"
grep -E '^\{' /tmp/r/prebuild_one16.log | cut -c1-300; ray stop --force > /dev/null 2>&1; pack
timeout 100 python3 scripts/bench_model.py --in-ray-task /tmp/one16.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
  --iterations 20 --profile --out /tmp/r/model_one16.json > /tmp/r/model_one16.log 2>&1; ph "model one16 exit $?"; ray stop --force > /dev/null 2>&1
grep -ho '"batch_size": [0-9]*, "ms_per_batch": [0-9.]*, "images_per_s": [0-9.]*' /tmp/r/model_one16.log | tail -3; pack
timeout $((585-SECONDS)) python3 scripts/train_shapes.py /tmp/hub /tmp/trained --minutes 3 --batch 4 --out-json /tmp/r/train.json > /tmp/r/train.log 2>&1; ph "train exit $?"
tail -2 /tmp/r/train.log | cut -c1-300
wait; [ -n "$HOSTCOMPILE" ] && cp /tmp/host_pyc.txt /tmp/r/host_pyc.txt; ph done; pack
