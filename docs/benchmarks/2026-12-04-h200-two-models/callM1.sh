# Two models on one GPU, call 1: weights for BiRefNet and BiRefNet_lite (Hub layout, random), the configs, and a
# cold prebuild of every bucket of both.
source .gpurun/setup.sh; rm -rf /tmp/r; mkdir -p /tmp/r
{ nproc; lscpu | grep -i "model name"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import sys, torch, torchvision, transformers, timm, ray; print(sys.version.split()[0], 'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, 'timm', timm.__version__, 'ray', ray.__version__)"
  sha256sum .hub-birefnet/birefnet.py .hub-lite/birefnet.py; } > $OUT/host.txt 2>&1; cat $OUT/host.txt
[ -d /tmp/hub ] || { python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/r/weights.log 2>&1; ph "weights exit $?"; }
rm -rf /tmp/lite; python3 .hub-lite/make_random_dir.py /tmp/lite >> /tmp/r/weights.log 2>&1; ph "lite weights exit $?"; tail -2 /tmp/r/weights.log
python3 - <<'PY'
import copy, yaml
prod = yaml.safe_load(open("configs/prod.yaml"))
one = copy.deepcopy(prod); one["applications"][0]["args"]["model"]["model_id"] = "/tmp/hub"
yaml.safe_dump(one, open("/tmp/one.yaml", "w"), sort_keys=False)
two = copy.deepcopy(prod); args = two["applications"][0]["args"]; model = args.pop("model")
args["models"] = [{**model, "name": "birefnet", "model_id": "/tmp/hub"}, {**model, "name": "birefnet_lite", "model_id": "/tmp/lite"}]
args["default_model"] = "birefnet"
yaml.safe_dump(two, open("/tmp/two.yaml", "w"), sort_keys=False)
PY
cp /tmp/one.yaml /tmp/two.yaml /tmp/r/; diff configs/prod.yaml /tmp/two.yaml > /tmp/r/config_diff_two.txt
timeout 480 python3 -m serve_app.prebuild --address local --config /tmp/two.yaml > /tmp/r/prebuild.log 2>&1; ph "prebuild exit $?"
grep -E '^\{|tasks' /tmp/r/prebuild.log | cut -c1-400; ray stop --force > /dev/null 2>&1
cp $OUT/phases.txt /tmp/r/phases_m1.txt; tar -C /tmp -czf $OUT/callM1.tgz r; ph done
