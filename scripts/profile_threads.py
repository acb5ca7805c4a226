"""Where a service process's Python threads spend a load: py-spy samples of one process, by thread.

Takes two py-spy records of the same process at once: the samples of every thread that is running (on a CPU, in
Python or native code), and only those of the thread holding the GIL (`--gil`). Per thread kind (a pool's threads
count as one, as in scripts/cpu_by_process.py), it reports the share of the time running, the share of the
process's time holding the GIL, and the functions seen most often at the top of its stacks. A process whose GIL is
held in nearly every sample has threads that wait for it, whatever the CPUs show.

    python scripts/profile_threads.py --pid 1234 --seconds 8 --out profile_model_replica.json

Needs py-spy on the PATH (or beside the Python running this) and the right to trace the process.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from cpu_by_process import thread_kind

RATE = 50  # samples a second: each sampler costs a little CPU of the host it measures
TOP = 8
# py-spy's raw lines: "thread (TID): NAME;frame (file:line);frame ... COUNT" (NAME absent for unnamed threads).
_LINE = re.compile(r"^(?:process \d+:\"[^\"]*\";)?thread \((?:0x)?[0-9a-fA-F]+\)(?:: ?([^;]*))?(.*) (\d+)$")


def py_spy() -> str | None:
    """The py-spy executable: on the PATH, or installed beside this Python."""
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def parse_raw(text: str) -> dict[str, Counter]:
    """{thread kind: Counter of its stacks' top frames} from py-spy's raw lines."""
    kinds: dict[str, Counter] = defaultdict(Counter)
    for line in text.splitlines():
        matched = _LINE.match(line.strip())
        if not matched:
            continue
        name, frames, count = matched.group(1) or "unnamed", matched.group(2), int(matched.group(3))
        top = frames.rsplit(";", 1)[-1].strip() if frames.strip(";") else "(no Python frames)"
        kinds[thread_kind(name.strip())][top] += count
    return kinds


def summarise(running: dict[str, Counter], gil: dict[str, Counter], samples: int) -> dict:
    """Per thread kind: its running samples (a pool's summed: 2.0 is two threads running all the time), its share
    of the samples holding the GIL, and the top frames of both."""
    threads = {}
    for kind in sorted(running.keys() | gil.keys(), key=lambda name: -sum(running.get(name, Counter()).values())):
        frames, holding = running.get(kind, Counter()), gil.get(kind, Counter())
        threads[kind] = {
            "running": round(sum(frames.values()) / samples, 3) if samples else 0.0,
            "holding_gil": round(sum(holding.values()) / samples, 3) if samples else 0.0,
            "top_frames": frames.most_common(TOP),
            "top_frames_holding_gil": holding.most_common(TOP),
        }
    held = sum(sum(counts.values()) for counts in gil.values())
    return {"samples_per_thread": samples, "gil_held_share": round(held / samples, 3) if samples else 0.0,
            "threads": threads}


def record(executable: str, pid: int, seconds: float, flag: str, out: Path) -> subprocess.Popen:
    """py-spy sampling `pid` without pausing it (--nonblocking: a stack may now and then be torn, never the
    process slowed), `flag` ("" or "--gil") added."""
    return subprocess.Popen([executable, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--rate", str(RATE), "--threads", "--nonblocking", "--format", "raw",
                             *([flag] if flag else []), "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--out", required=True, help="JSON summary; the raw records are written beside it")
    args = parser.parse_args()
    executable = py_spy()
    out = Path(args.out)
    if executable is None:
        out.write_text(json.dumps({"error": "py-spy is not installed"}))
        raise SystemExit("py-spy is not installed")
    with tempfile.TemporaryDirectory() as folder:
        raws = {flag: Path(folder) / f"{flag.strip('-') or 'running'}.txt" for flag in ("", "--gil")}
        running = {flag: record(executable, args.pid, args.seconds, flag, path) for flag, path in raws.items()}
        outcomes = {flag: (process.communicate()[1], process.returncode) for flag, process in running.items()}
        errors = {flag: stderr[-500:] for flag, (stderr, code) in outcomes.items()
                  if code != 0 or not raws[flag].exists()}
        if errors:
            out.write_text(json.dumps({"error": errors}))
            raise SystemExit(f"py-spy failed: {errors}")
        texts = {flag: path.read_text() for flag, path in raws.items()}
    for flag, text in texts.items():
        out.with_name(f"{out.stem}_{flag.strip('-') or 'running'}.txt").write_text(text)
    summary = {"pid": args.pid, "seconds": args.seconds, "rate": RATE,
               **summarise(parse_raw(texts[""]), parse_raw(texts["--gil"]), int(args.seconds * RATE))}
    out.write_text(json.dumps(summary, indent=1))
    print(json.dumps({"gil_held_share": summary["gil_held_share"],
                      **{kind: {key: value for key, value in figures.items() if not key.startswith("top")}
                         for kind, figures in summary["threads"].items()}}))


if __name__ == "__main__":
    main()
