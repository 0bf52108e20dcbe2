#!/usr/bin/env python3
"""Per-kernel GPU time of one training step from an Nsight Compute CSV (`gpu.sh ncu`): the
kernels between the last two Adam launches (`adam_many_kernel` ends every step), one line each,
then the time per kernel family.

    python3 worker/bench/ncu_step.py ncu-worker.csv
"""
import collections
import csv
import sys

FAMILIES = ["normalize_relu_grad", "normalize_relu", "channel_sums", "statistics", "finish_sums",
            "avg_pool", "global_avg_pool", "conv_operands", "cast_element", "im2col", "matmul",
            "adam", "cross_entropy", "copy"]


def family(name):
    if "xmma" in name or "cudnn" in name or "_engine" in name:
        return "convolutions (cuDNN)"
    return next((f for f in FAMILIES if f in name), "other")


def main(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        rows = list(csv.DictReader(line for line in f if line.startswith('"')))
    ends = [i for i, r in enumerate(rows) if r["Kernel Name"] == "adam_many_kernel"]
    if len(ends) < 2:
        print("fewer than two steps in the profile", file=sys.stderr)
        return 1
    step = rows[ends[-2] + 1 : ends[-1] + 1]
    totals = collections.Counter()
    for r in step:
        us = float(r["Metric Value"].replace(",", "")) / 1e3
        totals[family(r["Kernel Name"])] += us
        print(f"{us:9.1f} µs  {r['Grid Size']:>14}  {r['Kernel Name'][:100]}")
    print(f"\n{len(step)} kernels, {sum(totals.values()):.1f} µs")
    for name, us in totals.most_common():
        print(f"{us:9.1f} µs  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
