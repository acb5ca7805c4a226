# Lease Q, call 1 (fresh machine): probe the host, install the wheels, random weights, the configs: prod.yaml with
# model_id only (one.yaml), and device_jpeg_decode: never (never.yaml); the 3,000 bulk photos.
source .gpurun/setup.sh; mkdir -p /tmp/r
{ env | grep -E '^PYTHON|^OMP|^MKL|^CUDA' ; nproc; lscpu; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, kornia, PIL; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'pillow', PIL.__version__)"
  sha256sum .hub-birefnet/birefnet.py; } > /tmp/r/host.txt 2>&1; grep -E "^CPU\(s\)|Thread|Core|Socket|Model name|^16|H200|sha|torch" /tmp/r/host.txt
cp /tmp/host_pyc.txt /tmp/r/
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/r/weights.log 2>&1; ph "weights exit $?"; tail -1 /tmp/r/weights.log
python3 - <<'PY'
import copy, yaml
prod = yaml.safe_load(open("configs/prod.yaml"))
one = copy.deepcopy(prod); one["applications"][0]["args"]["model"]["model_id"] = "/tmp/hub"
yaml.safe_dump(one, open("/tmp/one.yaml", "w"), sort_keys=False)
never = copy.deepcopy(one); never["applications"][0]["args"]["ingress"]["device_jpeg_decode"] = "never"
yaml.safe_dump(never, open("/tmp/never.yaml", "w"), sort_keys=False)
PY
timeout 300 python3 -c "from pathlib import Path; from harness.photos import write_sample_photo_folder; write_sample_photo_folder('/tmp/bulk/in', 3000, photo_dir=Path('/tmp/photos'), workers=15)" > /tmp/r/photos.log 2>&1; ph "photos exit $?"
ls /tmp/bulk/in | wc -l
cp $OUT/phases.txt /tmp/r/phases_q1.txt; tar -C /tmp -czf $OUT/callQ1.tgz r; ph done
