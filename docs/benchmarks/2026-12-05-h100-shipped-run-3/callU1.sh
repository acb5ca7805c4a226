# Lease U, call 1 (fresh machine; carry .whl .devkit .gpurun .hub-birefnet): host, random weights, prod.yaml with
# model_id only, 3,000 bulk photos on the CPUs meanwhile; the GPU tests of the Triton kernels; the deformable
# convolution per shape (bias in the epilogue or after, channels-last), the window attention (a window's programs
# adjacent, or every window first), the decoder's last step (conv_before_upsample); then
# weights with structure trained on the GPU (train_shapes.py, 3 minutes).
source .gpurun/setup.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_u1.txt; tar -C /tmp -czf $OUT/callU1.tgz r; }
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, kornia, PIL, triton, ray; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'pillow', PIL.__version__, 'triton', triton.__version__, 'ray', ray.__version__, 'cudnn', torch.backends.cudnn.version())"
  sha256sum .hub-birefnet/birefnet.py; cat .gpurun/commit.txt; } > /tmp/r/host.txt 2>&1; cat /tmp/r/host.txt
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/r/weights.log 2>&1; ph "weights exit $?"
source .gpurun/oneyaml.sh
(timeout 300 python3 -c "from pathlib import Path; from harness.photos import write_sample_photo_folder; write_sample_photo_folder('/tmp/bulk/in', 3000, photo_dir=Path('/tmp/photos'), workers=4)" > /tmp/r/photos.log 2>&1; ph "photos exit $?") &
timeout 150 python3 -m pytest -n 0 -q -p no:cacheprovider -m gpu tests/gpu/test_triton_kernels.py > /tmp/r/gpu_tests.log 2>&1; ph "gpu tests exit $?"
tail -3 /tmp/r/gpu_tests.log | cut -c1-300; pack
timeout 260 python3 scripts/bench_kernels.py --kinds deform,attention,tail --candidates triton,triton_bias_after,triton_channels_last,triton_adjacent_blocks,triton_keys_once_split,sdpa,torchvision,compiled,compiled_conv_before_upsample --out /tmp/r/kernels.json > /tmp/r/kernels.log 2>&1; ph "kernels exit $?"
grep -E "^\{\"(deform|attention|tail)\"" /tmp/r/kernels.log; tail -c 600 /tmp/r/kernels.log | grep -iE "error|Traceback" ; pack
timeout 260 python3 scripts/train_shapes.py /tmp/hub /tmp/trained --minutes 3 --batch 4 --out-json /tmp/r/train.json > /tmp/r/train.log 2>&1; ph "train exit $?"
tail -2 /tmp/r/train.log | cut -c1-300
wait; [ -n "$HOSTCOMPILE" ] && cp /tmp/host_pyc.txt /tmp/r/host_pyc.txt; ls /tmp/bulk/in | wc -l; ph done; pack
