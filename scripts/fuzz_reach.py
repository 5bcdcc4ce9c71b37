"""Checks that the fuzz run reached every operation with real data: each
operation of the OpenAPI document got at least one 2xx answer (or a 3xx
the operation documents: the tracked link's redirect), read from
schemathesis's HAR report. Run by scripts/fuzz-api.sh:
    fuzz_reach.py OPENAPI_JSON HAR_DIR [EXCLUDED "METHOD /path" ...]
Prints one line per operation (requests, 2xx) and exits 1 naming those
never answered 2xx.
"""

import collections
import json
import os
import re
import sys
from urllib.parse import urlsplit

spec_path, har_dir, *excluded = sys.argv[1:]
spec = json.load(open(spec_path, encoding="utf-8"))
operations = []
for path, item in spec["paths"].items():
    for method in item:
        if method in ("get", "post", "patch", "delete", "put"):
            pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$"
            documented = {int(s) for s in item[method].get("responses", {}) if s.isdigit()}
            redirects = {s for s in documented if 300 <= s < 400}
            operations.append((method.upper(), path, re.compile(pattern), redirects))

answers = collections.defaultdict(collections.Counter)
for name in os.listdir(har_dir):
    for entry in json.load(open(os.path.join(har_dir, name), encoding="utf-8"))["log"]["entries"]:
        method = entry["request"]["method"]
        path = urlsplit(entry["request"]["url"]).path
        for m, template, pattern, _ in operations:
            if m == method and pattern.match(path):
                answers[(m, template)][entry["response"]["status"]] += 1
                break

unreached = []
for method, template, _, redirects in operations:
    counts = answers[(method, template)]
    ok = sum(n for status, n in counts.items() if 200 <= status < 300 or status in redirects)
    print(f"  {method:6} {template:58} {sum(counts.values()):5} requests, {ok:4} answered 2xx")
    if ok == 0 and f"{method} {template}" not in excluded:
        unreached.append(f"{method} {template}")
if unreached:
    print("never answered 2xx (no real data reached them):", *unreached, sep="\n  ")
    sys.exit(1)
print(f"fuzz reach: every operation answered 2xx at least once ({len(excluded)} excluded)")
