# Lease P, call 1 (fresh machine; carry .whl .devkit .gpurun .hub-birefnet): host, random weights, prod.yaml with
# model_id only, 3,000 bulk photos on the CPUs meanwhile; the GPU tests of the Triton kernels; the window attention
# kernel's variants per shape (keys in two blocks or one, the mask read for every window or only those it splits);
# then weights with structure trained on the GPU (train_shapes.py, 3 minutes).
source .gpurun/setup.sh; mkdir -p /tmp/p; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/p/phases_p1.txt; tar -C /tmp -czf $OUT/callP1.tgz p; }
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, kornia, PIL, triton, ray; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'pillow', PIL.__version__, 'triton', triton.__version__, 'ray', ray.__version__, 'cudnn', torch.backends.cudnn.version())"
  sha256sum .hub-birefnet/birefnet.py; cat .gpurun/commit.txt; } > /tmp/p/host.txt 2>&1; cat /tmp/p/host.txt
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/p/weights.log 2>&1; ph "weights exit $?"
python3 - <<'PY'
import copy, yaml
prod = yaml.safe_load(open("configs/prod.yaml"))
one = copy.deepcopy(prod); one["applications"][0]["args"]["model"]["model_id"] = "/tmp/hub"
yaml.safe_dump(one, open("/tmp/one.yaml", "w"), sort_keys=False)
PY
(timeout 300 python3 -c "from pathlib import Path; from harness.photos import write_sample_photo_folder; write_sample_photo_folder('/tmp/bulk/in', 3000, photo_dir=Path('/tmp/photos'), workers=4)" > /tmp/p/photos.log 2>&1; ph "photos exit $?") &
timeout 150 python3 -m pytest -n 0 -q -p no:cacheprovider -m gpu tests/gpu/test_triton_kernels.py > /tmp/p/gpu_tests.log 2>&1; ph "gpu tests exit $?"
tail -3 /tmp/p/gpu_tests.log | cut -c1-300; pack
timeout 200 python3 scripts/bench_kernels.py --kinds attention --out /tmp/p/kernels_attention.json > /tmp/p/kernels_attention.log 2>&1; ph "kernels exit $?"
grep -E '^\{"attention"' /tmp/p/kernels_attention.log; tail -c 600 /tmp/p/kernels_attention.log | grep -iE "error|Traceback" ; pack
timeout 260 python3 scripts/train_shapes.py /tmp/hub /tmp/trained --minutes 3 --batch 4 --out-json /tmp/p/train.json > /tmp/p/train.log 2>&1; ph "train exit $?"
tail -2 /tmp/p/train.log | cut -c1-300
wait; [ -n "$HOSTCOMPILE" ] && cp /tmp/host_pyc.txt /tmp/p/host_pyc.txt; ls /tmp/bulk/in | wc -l; ph done; pack
