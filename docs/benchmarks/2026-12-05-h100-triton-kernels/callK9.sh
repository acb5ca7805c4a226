# Lease K, call 9 (call K4's machine): the model alone with the service's settings (/tmp/svc.yaml), batch 1 and 8,
# from the buckets the prebuild saved.
source .gpurun/setup.sh; ray stop --force >/dev/null 2>&1; mkdir -p /tmp/y; timeout 170 python3 scripts/bench_model.py --in-ray-task /tmp/svc.yaml --model-id /tmp/hub --photo-dir /tmp/photos --batch-sizes 1,8 --iterations 20 --out /tmp/y/model_svc_k9.json > /tmp/y/model_svc_k9.log 2>&1; echo "exit $? at $SECONDS s"; grep -h "images_per_s" /tmp/y/model_svc_k9.log | cut -c1-600; ray stop --force >/dev/null 2>&1; cp /tmp/y/* $OUT/
