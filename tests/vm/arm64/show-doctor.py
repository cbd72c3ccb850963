#!/usr/bin/env python3
"""Prints `thv-sandbox doctor --json` (FILE) one check a line: STATUS NAME: DETAIL (tests/vm/arm64.sh).
Exits 1 when the file is not doctor's JSON (an object with "ok" and a list of checks with name and status)."""
import json
import sys

try:
    report = json.load(open(sys.argv[1]))
    checks = report["checks"]
    assert isinstance(report["ok"], bool) and checks
    for c in checks:
        print(f"  {c['status']:<5} {c['name']}: {c['detail']}")
        if c.get("hint"):
            print(f"        hint: {c['hint']}")
    print(f"  ok: {report['ok']}")
except (OSError, ValueError, KeyError, TypeError, AssertionError) as e:
    print(f"not doctor's JSON: {e!r}", file=sys.stderr)
    sys.exit(1)
