# Lease V, call 1 (fresh machine; carry .whl .devkit .gpurun .hub-birefnet): host, random weights, prod.yaml with
# model_id only, 3,000 bulk photos on the CPUs meanwhile; the GPU tests of the Triton kernels; the window attention
# timed alone (bias and mask read once for the windows that add them, or per window) and the MLPs' first layer
# (GELU in the product's epilogue, or a pass of its own); weights with structure
# trained on the GPU (train_shapes.py, 3 minutes). No prebuild here: serve_app/model/*.py is in the saved buckets'
# key, and the attention's default may flip before call V2.
source .gpurun/setup.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_v1.txt; tar -C /tmp -czf $OUT/callV1.tgz r; }
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, kornia, PIL, triton, ray; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'pillow', PIL.__version__, 'triton', triton.__version__, 'ray', ray.__version__, 'cudnn', torch.backends.cudnn.version())"
  sha256sum .hub-birefnet/birefnet.py; cat .gpurun/commit.txt; } > /tmp/r/host.txt 2>&1; cat /tmp/r/host.txt
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/r/weights.log 2>&1; ph "weights exit $?"
source .gpurun/oneyaml.sh
(timeout 300 python3 -c "from pathlib import Path; from harness.photos import write_sample_photo_folder; write_sample_photo_folder('/tmp/bulk/in', 3000, photo_dir=Path('/tmp/photos'), workers=4)" > /tmp/r/photos.log 2>&1; ph "photos exit $?") &
timeout 150 python3 -m pytest -n 0 -q -p no:cacheprovider -m gpu tests/gpu/test_triton_kernels.py > /tmp/r/gpu_tests.log 2>&1; ph "gpu tests exit $?"
tail -3 /tmp/r/gpu_tests.log | cut -c1-300; pack
timeout 180 python3 scripts/bench_kernels.py --kinds attention,mlp --candidates triton,triton_windows_inner,triton_every_window_first,sdpa,compiled,compiled_gelu_in_matmul --out /tmp/r/kernels.json > /tmp/r/kernels.log 2>&1; ph "kernels exit $?"
grep -E "^\{\"(attention|mlp)\"" /tmp/r/kernels.log; tail -c 600 /tmp/r/kernels.log | grep -iE "error|Traceback"; pack
timeout $((585-SECONDS)) python3 scripts/train_shapes.py /tmp/hub /tmp/trained --minutes 3 --batch 4 --out-json /tmp/r/train.json > /tmp/r/train.log 2>&1; ph "train exit $?"
tail -2 /tmp/r/train.log | cut -c1-300
wait; [ -n "$HOSTCOMPILE" ] && cp /tmp/host_pyc.txt /tmp/r/host_pyc.txt; ph done; pack
