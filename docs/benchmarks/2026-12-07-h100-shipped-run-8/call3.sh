# Call 3 (calls 1-2's machine): the same serve run with device_png_min_pixels 0 (the ingress encodes every PNG):
# 64 and 1 clients, then 64 at 12 MP, the CPUs per process meanwhile.
source .gpurun/setup.sh; o=/tmp/r3; mkdir -p $o; ray stop --force > /dev/null 2>&1; pkill -x haproxy
sed 's/device_png_min_pixels: 8000000/device_png_min_pixels: 0/' /tmp/r/shipped.yaml > $o/shipped.yaml; grep -c "device_png_min_pixels: 0" $o/shipped.yaml
pack() { tar -C /tmp -czf $OUT/call3.tgz r3; }
st=$(python3 -c "import time; print(time.time())"); (serve run $o/shipped.yaml > $o/serve.log 2>&1) &
for i in $(seq 1 900); do sleep 0.1; [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' http://127.0.0.1:8000/readyz)" = 200 ] && break; done
ready=$(python3 -c "import time; print(round(time.time() - $st, 1))"); ph "readyz $ready"
timeout 150 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --levels 64,1 --duration 30 --warmup 20 \
  --serve-run-at $st --ready-after-s $ready --out $o/service.json > $o/service.log 2>&1; ph "service exit $?"
(timeout 90 python3 scripts/bench_service.py --url http://127.0.0.1:8000 --photo-dir /tmp/photos --photo-size 4000x3000 --photos 12 --levels 64 \
  --duration 30 --warmup 20 --out $o/service_12mp.json > $o/service_12mp.log 2>&1; ph "12 MP exit $?") & p=$!
sleep 20; python3 scripts/cpu_by_process.py --seconds 20 --out $o/cpu_12mp.json > /dev/null; wait $p
grep -E "images/s" $o/service.log $o/service_12mp.log | cut -c1-260; cp $OUT/phases.txt $o/phases_call3.txt
head -c 30000 $o/serve.log > $o/serve_head.log; rm $o/serve.log; pack
ray stop --force > /dev/null 2>&1
