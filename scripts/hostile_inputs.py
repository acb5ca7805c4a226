"""POST the hostile-input corpus (scripts/harness/hostile_corpus.py) to a running service and count outcomes.

    python scripts/hostile_inputs.py --url http://127.0.0.1:8000 [--out report.json]
"""

import argparse
import json
from pathlib import Path

from harness.hostile_corpus import build_corpus, post_corpus, summarize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", help="sent as Authorization: Bearer when the service has keys")
    parser.add_argument("--out", type=Path, help="write every row and the summary as JSON")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else None
    rows = post_corpus(args.url.rstrip("/"), build_corpus(), headers)
    for row in rows:
        print(f"{row['case']:32s} {row['status']}  {'' if row['as_expected'] else 'UNEXPECTED'}")
    summary = summarize(rows)
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")
    raise SystemExit(0 if summary["server_errors"] == 0 and not summary["unexpected"] else 1)


if __name__ == "__main__":
    main()
