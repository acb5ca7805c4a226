# Lease P, call 1 (fresh machine): the wheels, random weights, prod.yaml with model_id only (one.yaml).
source .gpurun/setup.sh; mkdir -p /tmp/r
{ nproc; lscpu | grep -E "Model name|^CPU\(s\)"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } > /tmp/r/host.txt 2>&1; cat /tmp/r/host.txt
python3 .hub-birefnet/make_random_dir.py /tmp/hub > /tmp/r/weights.log 2>&1; ph "weights exit $?"
python3 - <<'PY'
import copy, yaml
prod = yaml.safe_load(open("configs/prod.yaml"))
prod["applications"][0]["args"]["model"]["model_id"] = "/tmp/hub"
yaml.safe_dump(prod, open("/tmp/one.yaml", "w"), sort_keys=False)
PY
cp $OUT/phases.txt /tmp/r/phases_p1.txt; tar -C /tmp -czf $OUT/callP1.tgz r; ph done
