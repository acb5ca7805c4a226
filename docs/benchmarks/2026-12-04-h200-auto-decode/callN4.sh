# Lease N, call 4 (call N3's machine): `serve run` with device_jpeg_decode: never (the ingress decodes the model's
# reduced copy of a 12 MP photo), 64 clients at 12 MP with CPU per process; then the offline bulk tool on the same
# 3,000 photos with prod.yaml's model settings, its masks against the bulk client's; then the accuracy check.
[ -d /tmp/bulk/out-client ] || { echo "not call N3's machine"; exit 1; }
source .gpurun/setup.sh; mkdir -p /tmp/r; ray stop --force > /dev/null 2>&1
pack() { cp $OUT/phases.txt /tmp/r/phases_n4.txt; tar -C /tmp -czf $OUT/callN4.tgz r; }
start=$(date +%s.%N); (serve run /tmp/never.yaml > /tmp/r/serve_never.log 2>&1) &
for i in $(seq 1 1500); do sleep 0.1; [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
ready=$(python3 -c "import time; print(round(time.time() - $start, 1))"); ph "never readyz 200 after $ready s"
(timeout 80 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --photo-size 4000x3000 --photos 12 \
  --levels 64 --duration 30 --warmup 20 --out /tmp/r/service_12mp_never.json > /tmp/r/service_12mp_never.log 2>&1; ph "never 12 MP exit $?") &
sleep 30; python3 .gpurun/cpu_by_proc.py 20 > /tmp/r/cpu_12mp_never.json; wait %2; cat /tmp/r/cpu_12mp_never.json
grep -E "images/s" /tmp/r/service_12mp_never.log | cut -c1-250 | head -2
kill %1 2>/dev/null; sleep 2; ray stop --force > /dev/null 2>&1; pkill -x haproxy
grep -v "^\s*$" /tmp/r/serve_never.log | tail -c 20000 > /tmp/r/serve_never_tail.log; rm /tmp/r/serve_never.log; pack
timeout 300 python3 scripts/bench_bulk.py --mode offline --config configs/prod.yaml --model-id /tmp/hub --work-dir /tmp/bulk \
  --photos 3000 --photo-dir /tmp/photos --address local --compare-dir /tmp/bulk/out-client --compare-count 200 \
  --out /tmp/r/bulk_offline.json > /tmp/r/bulk_offline.log 2>&1; ph "bulk offline exit $?"
tail -c 1200 /tmp/r/bulk_offline.log; ray stop --force > /dev/null 2>&1; pack
timeout $((570-SECONDS)) python3 scripts/check_accuracy.py --model-id /tmp/hub --photo-dir /tmp/photos --candidates compiled_graphs:fp16 \
  --batch-size 8 --out /tmp/r/accuracy.json > /tmp/r/accuracy.log 2>&1; ph "accuracy exit $?"
tail -5 /tmp/r/accuracy.log | cut -c1-400; ph done; pack
