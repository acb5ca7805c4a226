# session 11, call 4 (call 3's machine; the commands as run, from the repository root, .gpurun and .photos carried):
# when_idle with Serve's handle router and user code on the replicas' main event loops. Not ready within 120 s.
export PYTHONPATH=/tmp/site:$PWD:$PWD/scripts RAY_USAGE_STATS_ENABLED=0 PATH=/tmp/site/bin:$PATH; ray stop --force >/dev/null 2>&1
RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0 RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0 timeout 180 python3 scripts/bench_service.py \
  --config configs/prod.yaml --model-id import:birefnet_random:build --photo-dir .photos --set-model execution=compiled \
  --set-model graph_batch_sizes=[1,8] --set-model compile_cache_dir=/tmp/cc --set-model 'compile_options={"triton.cudagraphs": true}' \
  --ingress-proxy haproxy --ingress-replicas 12 --remover-replicas 1 --ready-timeout 120 --levels 1 --duration 15 --warmup 5 \
  --set-ingress device_jpeg_decode=when_idle --out $OUT/service_when_idle_one_loop.json > $OUT/service_when_idle_one_loop.log 2>&1
