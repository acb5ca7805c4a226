# Lease M, call 1 (fresh machine; carry .whl .devkit .gpurun .hub-birefnet): host, random weights, configs (prod.yaml
# with model_id only), 3,000 bulk photos and the fp16 ONNX exports (batch 1 and 8) on the CPUs, meanwhile weights with
# structure trained on the GPU (train_shapes.py, 3 minutes).
source .gpurun/setup.sh; mkdir -p /tmp/m /tmp/onnx; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/m/phases_m1.txt; tar -C /tmp -czf $OUT/callM1.tgz m; }
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, kornia, PIL, triton, ray, onnx, onnxscript; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'pillow', PIL.__version__, 'triton', triton.__version__, 'ray', ray.__version__, 'onnx', onnx.__version__, 'onnxscript', onnxscript.__version__, 'cudnn', torch.backends.cudnn.version())"
  sha256sum .hub-birefnet/birefnet.py; cat .gpurun/commit.txt; } > /tmp/m/host.txt 2>&1; cat /tmp/m/host.txt
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/m/weights.log 2>&1; ph "weights exit $?"
python3 - <<'PY'
import copy, yaml
prod = yaml.safe_load(open("configs/prod.yaml"))
one = copy.deepcopy(prod); one["applications"][0]["args"]["model"]["model_id"] = "/tmp/hub"
yaml.safe_dump(one, open("/tmp/one.yaml", "w"), sort_keys=False)
PY
(timeout 300 python3 -c "from pathlib import Path; from harness.photos import write_sample_photo_folder; write_sample_photo_folder('/tmp/bulk/in', 3000, photo_dir=Path('/tmp/photos'), workers=6)" > /tmp/m/photos.log 2>&1; ph "photos exit $?") &
for b in 1 8; do (CUDA_VISIBLE_DEVICES= timeout 420 python3 scripts/export_onnx.py /tmp/hub /tmp/onnx/b$b.onnx --batch $b --precision fp16 \
  --out-json /tmp/m/export_b$b.json > /tmp/m/export_b$b.log 2>&1; ph "export b$b exit $?") & done
timeout 300 python3 scripts/train_shapes.py /tmp/hub /tmp/trained --minutes 3 --batch 4 --out-json /tmp/m/train.json > /tmp/m/train.log 2>&1; ph "train exit $?"
tail -3 /tmp/m/train.log | cut -c1-400; pack
wait; [ -n "$HOSTCOMPILE" ] && cp /tmp/host_pyc.txt /tmp/m/host_pyc.txt
ls /tmp/bulk/in | wc -l; tail -2 /tmp/m/export_b*.log | cut -c1-300; ls -la /tmp/onnx; ph done; pack
