"""Fifteenth session: where a lone request's time goes in a `bench_model.py --lone-trace` profile (Chrome trace JSON,
gzipped). Per request (from one nvJPEG decode to the next): the GPU's idle gaps over 40 us, the CPU calls over 100 us
(and the graph launch, the compiled region, the final synchronisation), and each stream's span and busy time.

    python3 lone_trace_gaps.py call3_lone_trace.json.gz
"""
import json, gzip, sys
ev = json.load(gzip.open(sys.argv[1]))["traceEvents"]
X = [e for e in ev if e.get("ph") == "X"]
gpu = sorted([e for e in X if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")], key=lambda e: e["ts"])
cpu = sorted([e for e in X if e.get("cat") in ("cpu_op", "cuda_runtime")], key=lambda e: e["ts"])
dec = [e for e in cpu if e["name"] == "image::decode_jpegs_cuda"]
bounds = [e["ts"] for e in dec] + [float("inf")]
for i in range(len(dec)):
    lo, hi = bounds[i], bounds[i+1]
    g = [e for e in gpu if lo <= e["ts"] < hi]
    c = [e for e in cpu if lo <= e["ts"] < hi]
    print(f"\nrequest {i}: cpu decode op dur {dec[i]['dur']:.0f}; gpu events {len(g)}, first {g[0]['ts']-lo:.0f}, gpu end {max(e['ts']+e['dur'] for e in g)-lo:.0f}, cpu end {max(e['ts']+e['dur'] for e in c)-lo:.0f}; gpu busy {sum(e['dur'] for e in g):.0f}")
    t = g[0]["ts"]
    for e in g:
        if e["ts"] - t > 40: print(f"  gpu idle {t-lo:8.0f} .. {e['ts']-lo:8.0f} ({e['ts']-t:6.0f} us) before {e['name'][:50]} stream {e.get('args',{}).get('stream')}")
        t = max(t, e["ts"] + e["dur"])
    for e in c:
        if e["dur"] > 100 or e["name"] in ("cudaGraphLaunch","Torch-Compiled Region: 0/0","cudaEventSynchronize","cudaStreamSynchronize"):
            print(f"  cpu {e['ts']-lo:8.0f} +{e['dur']:7.0f} {e['name'][:70]}")
    # gpu segments by stream
    streams = {}
    for e in g:
        s = e.get("args", {}).get("stream"); a = streams.setdefault(s, [1e18, 0, 0, 0]); a[0] = min(a[0], e["ts"]-lo); a[1] = max(a[1], e["ts"]+e["dur"]-lo); a[2] += e["dur"]; a[3] += 1
    for s, a in streams.items(): print(f"  stream {s}: {a[0]:.0f}..{a[1]:.0f} busy {a[2]:.0f} n {a[3]}")
