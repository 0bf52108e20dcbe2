#!/usr/bin/env python3
"""Per-kernel GPU time (and DRAM traffic, where profiled) of one training step from an Nsight
Compute CSV (`gpu.sh ncu`): the kernels between the last two Adam launches (`adam_many_kernel`
ends every step), one line each, then the time per kernel family.

    python3 worker/bench/ncu_step.py ncu-worker.csv
"""
import collections
import csv
import sys

FAMILIES = ["normalize_relu_grad", "normalize_relu_pool", "normalize_relu", "channel_sums", "statistics",
            "finish_sums", "global_avg_pool", "avg_pool", "conv_operands", "copy_channels", "pad_channels",
            "partial_sums", "sum_partials", "cast_element",
            "im2col", "matmul", "adam", "cross_entropy", "copy"]


def family(name):
    if "xmma" in name or "cudnn" in name or "_engine" in name:
        return "convolutions (cuDNN)"
    if "tiles_kernel" in name:
        return "conv_operands"
    return next((f for f in FAMILIES if f in name), "other")


def kernels(path):
    """One dict per profiled kernel (name, grid, µs, DRAM MB when measured), in launch order: the
    CSV has a row per kernel and metric."""
    with open(path, encoding="utf-8", errors="replace") as f:
        rows = list(csv.DictReader(line for line in f if line.startswith('"')))
    by_id = {}
    for r in rows:
        k = by_id.setdefault(r["ID"], {"name": r["Kernel Name"], "grid": r["Grid Size"], "us": 0.0, "mb": None})
        value = float(r["Metric Value"].replace(",", ""))
        if r["Metric Name"] == "gpu__time_duration.sum":
            k["us"] = value / 1e3
        elif r["Metric Name"] == "dram__bytes.sum":
            k["mb"] = value / 1e6
    return list(by_id.values())


def main(path):
    ks = kernels(path)
    ends = [i for i, k in enumerate(ks) if k["name"] == "adam_many_kernel"]
    if len(ends) < 2:
        print("fewer than two steps in the profile", file=sys.stderr)
        return 1
    step = ks[ends[-2] + 1 : ends[-1] + 1]
    totals, traffic = collections.Counter(), collections.Counter()
    for k in step:
        totals[family(k["name"])] += k["us"]
        traffic[family(k["name"])] += k["mb"] or 0.0
        dram = f"{k['mb']:8.1f} MB {k['mb'] / k['us'] if k['us'] else 0:5.2f} TB/s" if k["mb"] is not None else ""
        print(f"{k['us']:9.1f} µs {dram} {k['grid']:>14}  {k['name'][:90]}")
    print(f"\n{len(step)} kernels, {sum(totals.values()):.1f} µs")
    for name, us in totals.most_common():
        print(f"{us:9.1f} µs {traffic[name]:9.1f} MB  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
