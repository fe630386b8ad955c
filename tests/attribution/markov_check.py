"""The Markov model of PyPI's channelattribution over paths the dashboard
exported (`/api/paths?format=csv`): an independent implementation (it
simulates walks on the chain; ensemble solves it exactly).

Usage: markov_check.py PATHS_CSV → prints {"channel": credit, ...} as JSON.
"""
import contextlib
import csv
import io
import json
import sys

import pandas as pd

with contextlib.redirect_stdout(io.StringIO()):
    from ChannelAttribution import markov_model

rows = list(csv.DictReader(open(sys.argv[1], encoding="utf-8-sig")))
# `direct` (a sign-up without any touch) is not a state of ensemble's
# chain: it is credited with its own conversions, the channels share the
# others (docs/attribution.md). The same here: direct rows stay out of the
# chain and come back as direct's credit.
direct = sum(int(r["conversions"]) for r in rows if r["path"] == "direct")
rows = [r for r in rows if r["path"] != "direct"]
data = pd.DataFrame(
    {
        # The truncation mark is not a channel (ensemble's walks start at
        # the first step kept).
        "path": [r["path"].replace("… > ", "") for r in rows],
        "total_conversions": [int(r["conversions"]) for r in rows],
        "total_null": [int(r["without_signup"]) for r in rows],
    }
)
longest = max(len(p.split(" > ")) for p in data["path"])
with contextlib.redirect_stdout(io.StringIO()):
    result = markov_model(
        data,
        "path",
        "total_conversions",
        var_null="total_null",
        order=1,
        sep=">",
        # Walks may loop (a > b > a): let simulated walks run well past the
        # longest path, or long loops get cut.
        max_step=max(100, 10 * longest),
        nsim_start=1e6,
        seed=1,
        verbose=False,
        flg_pro=False,
    )
credits = {str(c).strip(): float(v) for c, v in zip(result["channel_name"], result["total_conversions"])}
if direct:
    credits["direct"] = float(direct)
print(json.dumps(credits))
