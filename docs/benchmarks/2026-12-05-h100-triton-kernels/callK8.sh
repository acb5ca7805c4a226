# Lease K, call 8 (fresh machine; carry .whl .devkit .gpurun .hub-birefnet): host, random weights; the window
# attention's Triton kernel alone on BiRefNet's stage shapes; the model alone (compiled_graphs, batch 8, prod.yaml's
# settings in a replica-like Ray task) as shipped and with both Triton kernels (deform+window), one process, a
# profile of each; then both against eager fp32 on 16 photos (from the same compiled buckets).
source .gpurun/setup.sh; mkdir -p /tmp/x; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/x/phases_k8.txt; tar -C /tmp -czf $OUT/callK8.tgz x; }
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, kornia, PIL, triton, ray; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'kornia', kornia.__version__, 'pillow', PIL.__version__, 'triton', triton.__version__, 'ray', ray.__version__, 'cudnn', torch.backends.cudnn.version())"
  sha256sum .hub-birefnet/birefnet.py; git log -1 --format=%H 2>/dev/null; } > /tmp/x/host_k8.txt 2>&1; cat /tmp/x/host_k8.txt
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/x/weights.log 2>&1; ph "weights exit $?"
python3 - <<'PY'
import copy, yaml
prod = yaml.safe_load(open("configs/prod.yaml"))
one = copy.deepcopy(prod); one["applications"][0]["args"]["model"]["model_id"] = "/tmp/hub"
yaml.safe_dump(one, open("/tmp/one.yaml", "w"), sort_keys=False)
PY
timeout 60 python3 .gpurun/attn_check.py > /tmp/x/attn_check.txt 2>&1; ph "attn check exit $?"; tail -5 /tmp/x/attn_check.txt | cut -c1-300
timeout 90 python3 -m pytest -n 0 -p no:cacheprovider -m gpu tests/gpu/test_triton_kernels.py -q -rA > /tmp/x/gpu_triton.log 2>&1; ph "gpu test exit $?"; tail -3 /tmp/x/gpu_triton.log
timeout 330 python3 scripts/bench_model.py --in-ray-task /tmp/one.yaml --model-id /tmp/hub --photo-dir /tmp/photos \
  --batch-sizes 8 --kernels none,deform+window --iterations 20 --profile --out /tmp/x/model_k8.json > /tmp/x/model_k8.log 2>&1; ph "model none,deform+window exit $?"
ray stop --force > /dev/null 2>&1; grep -h "images_per_s\|by_kind" /tmp/x/model_k8.log | cut -c1-400; pack
timeout $((545-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/hub --photo-dir /tmp/photos --photos 16 \
  --candidates compiled_graphs:fp16,compiled_graphs:fp16:deform+window --batch-size 8 \
  --out /tmp/x/accuracy_k8.json > /tmp/x/accuracy_k8.log 2>&1; ph "accuracy exit $?"
grep -h '^{' /tmp/x/accuracy_k8.log | cut -c1-300; tail -3 /tmp/x/accuracy_k8.log | cut -c1-300; ph done; pack
