# background: once /readyz is ready, wait $1 s, then sample one ingress replica, the model replica and the proxy
# for $2 s (py-spy, collapsed stacks) into $OUT/spy_$3_*.txt
for i in $(seq 1 240); do
  python3 -c "import urllib.request,sys; sys.exit(0 if b'ready' in urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).read() else 1)" 2>/dev/null && break
  sleep 1
done
sleep $1
for who in Ingress BackgroundRemover ProxyActor; do
  pid=$(pgrep -f "$who" | head -1)
  [ -n "$pid" ] && py-spy record -p $pid -d $2 -r 50 --nonblocking --format raw -o $OUT/spy_$3_$who.txt > /dev/null 2>&1 &
done
wait
