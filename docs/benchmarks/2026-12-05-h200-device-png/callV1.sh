# Lease V, call 1 (fresh machine; branch cutout-on-device checked out; carry .whl .gpurun .hub-birefnet .photos):
# host, random weights, configs, 12 MP photo folder; the device PNG encoder against the host's on 12 MP cut-outs
# (eager and compiled passes: kernel ms, CPU ms, bytes), its GPU test.
source .gpurun/setup.sh; mkdir -p /tmp/v
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, kornia, PIL, triton; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'pillow', PIL.__version__, 'triton', triton.__version__)"
  sha256sum .hub-birefnet/birefnet.py; git log --oneline -1 2>/dev/null; } > /tmp/v/host.txt 2>&1; cat /tmp/v/host.txt
[ -f /tmp/hub/config.json ] || python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/v/weights.log 2>&1; ph "weights exit $?"
python3 - <<'PY'
import copy, yaml
prod = yaml.safe_load(open("configs/prod.yaml"))
one = copy.deepcopy(prod); one["applications"][0]["args"]["model"]["model_id"] = "/tmp/hub"
yaml.safe_dump(one, open("/tmp/one.yaml", "w"), sort_keys=False)
PY
timeout 200 python3 scripts/bench_device_png.py --photo-dir /tmp/photos --photo-size 4000x3000 --photos 3 --iterations 5 \
  --out /tmp/v/device_png_12mp.json > /tmp/v/device_png_12mp.log 2>&1; ph "device png cut-outs exit $?"
timeout 120 python3 scripts/bench_device_png.py --photo-dir /tmp/photos --photo-size 4000x3000 --photos 2 --iterations 5 --opaque \
  --out /tmp/v/device_png_12mp_opaque.json > /tmp/v/device_png_12mp_opaque.log 2>&1; ph "device png opaque exit $?"
grep -v Warn /tmp/v/device_png_12mp.log /tmp/v/device_png_12mp_opaque.log | cut -c1-260
timeout 200 python3 -m pytest -n 0 -p no:cacheprovider -m gpu tests/gpu/test_device_png.py -q -rA > /tmp/v/gpu_png.log 2>&1; ph "gpu png test exit $?"
tail -3 /tmp/v/gpu_png.log
cp $OUT/phases.txt /tmp/v/phases_v1.txt; tar -C /tmp -czf $OUT/callV1.tgz v; ph done
