"""Medians over alternations, new/old per row: python3 compare.py <ab.jsonl>"""
import json, statistics, sys
from collections import defaultdict
t = defaultdict(lambda: defaultdict(list))
for line in open(sys.argv[1]):
    r = json.loads(line)
    t[(r["layer"], r["tier"], r["layout"])][r["label"]].append(r["ms"])
for key, d in t.items():
    old, new = statistics.median(d["old"]), statistics.median(d["new"])
    print(f"{' '.join(key):22s} old {old:.4f} new {new:.4f} ms  old/new {old / new:.2f}  (old {min(d['old']):.4f}-{max(d['old']):.4f}, new {min(d['new']):.4f}-{max(d['new']):.4f})")
