# Lease K, call 1 (fresh machine; carry .whl .devkit .gpurun .hub-birefnet): host, random weights; the model alone
# compiled and captured at batch 8 (prod.yaml's settings, in a replica-like Ray task), with the kernel candidates put
# into the loaded model one at a time (bench_model --kernels), a profile by kernel kind of each.
source .gpurun/setup.sh; mkdir -p /tmp/x; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/x/phases_k1.txt; tar -C /tmp -czf $OUT/callK1.tgz x; }
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, kornia, PIL, triton, ray; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'pillow', PIL.__version__, 'triton', triton.__version__, 'ray', ray.__version__, 'cudnn', torch.backends.cudnn.version())"
  sha256sum .hub-birefnet/birefnet.py; git log --oneline -1 2>/dev/null; } > /tmp/x/host.txt 2>&1; cat /tmp/x/host.txt
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/x/weights.log 2>&1; ph "weights exit $?"
python3 - <<'PY'
import copy, yaml
prod = yaml.safe_load(open("configs/prod.yaml"))
one = copy.deepcopy(prod); one["applications"][0]["args"]["model"]["model_id"] = "/tmp/hub"
yaml.safe_dump(one, open("/tmp/one.yaml", "w"), sort_keys=False)
PY
for k in none deform+attention+linear deform+linear; do
  [ $k = deform+linear ] && [ $SECONDS -gt 420 ] && break
  timeout $((590-SECONDS)) python3 scripts/bench_model.py --in-ray-task /tmp/one.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
    --batch-sizes 8 --kernels $k --iterations 20 --profile --out /tmp/x/model_$k.json > /tmp/x/model_$k.log 2>&1; ph "model $k exit $?"
  ray stop --force > /dev/null 2>&1; grep -h "images_per_s\|by_kind" /tmp/x/model_$k.log | cut -c1-400; pack
done
ph done; pack
