"""The rows of the staging trial whose convolution the library still runs the same way.

The trial run (results/h100-issue4/staging-trial-9bc0182) staged every NCHW input with a
channel reduction (Cg >= 16, not depthwise) through channels-last chunks. The rule that
shipped (`im2win.ops.staged_images`) stages fewer. This keeps the trial's (layer, tier,
layout) groups where both rules choose alike (staged by both, or by neither), every
method's row of each (cuDNN's included, so each ratio stays one run's), and writes them as
a results.jsonl for notes/scripts/targets.py, which lets later files win per row:

    python3 notes/scripts/same_path_rows.py TRIAL_DIR OUT_DIR
    python3 notes/scripts/targets.py EARLIER_RUN OUT_DIR
"""

import json
import sys
from pathlib import Path

import torch

from im2win.bench.figures import load_rows
from im2win.ops import staged_images
from im2win.params import conv_params

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def staged_in_trial(row: dict) -> bool:
    """The trial's rule (commit 9bc0182)."""
    cg = row["c"] // row["groups"]
    return row["layout"] == "NCHW" and cg >= 16 and row["groups"] < row["c"]


def staged_now(row: dict) -> bool:
    x = torch.empty(row["batch"], row["c"], row["hw"], row["hw"], device="meta",
                    dtype=DTYPES[row["dtype"]])  # fmt: skip
    rs = row["rs"]
    params = conv_params(row["stride"], row["padding"], row["dilation"], row["groups"],
                         kernel_size=(rs, rs))  # fmt: skip
    weight_shape = (row["k"], row["c"] // row["groups"], rs, rs)
    return staged_images(x, weight_shape, params, row["layout"] == "NHWC") > 0


def main(trial: str, out: str) -> None:
    rows = [row for row in load_rows(trial) if staged_in_trial(row) == staged_now(row)]
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out) / "results.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    staged = sorted({(r["layer"], r["tier"]) for r in rows if staged_now(r)})
    print(f"{len(rows)} rows kept; staged (NCHW): {staged}")


if __name__ == "__main__":
    main(*sys.argv[1:])
