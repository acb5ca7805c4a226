# Final lease, call 1 (fresh machine): probe the host, install the wheels, random weights, then the GPU tier's
# decode test (nvJPEG through torchvision against the ingress's decode).
source .gpurun/setup.sh; mkdir -p /tmp/r
{ env | grep -E '^PYTHON|^OMP|^MKL|^CUDA' ; nproc; lscpu | grep -i "model name"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, kornia, PIL; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'pillow', PIL.__version__)"
  sha256sum .hub-birefnet/birefnet.py; } > /tmp/r/host.txt 2>&1; cat /tmp/r/host.txt
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/r/weights.log 2>&1; ph "weights exit $?"; tail -2 /tmp/r/weights.log
python3 - <<'PY'
import copy, yaml
prod = yaml.safe_load(open("configs/prod.yaml"))
one = copy.deepcopy(prod); one["applications"][0]["args"]["model"]["model_id"] = "/tmp/hub"
yaml.safe_dump(one, open("/tmp/one.yaml", "w"), sort_keys=False)
never = copy.deepcopy(one); never["applications"][0]["args"]["ingress"]["device_jpeg_decode"] = "never"
yaml.safe_dump(never, open("/tmp/never.yaml", "w"), sort_keys=False)
noenv = copy.deepcopy(one); noenv["applications"][0].pop("runtime_env")
yaml.safe_dump(noenv, open("/tmp/noenv.yaml", "w"), sort_keys=False)
PY
true
true
cp $OUT/phases.txt /tmp/r/phases_f1.txt; tar -C /tmp -czf $OUT/callF1.tgz r; ph done
