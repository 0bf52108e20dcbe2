#!/usr/bin/env python3
"""Turns the result lines of `worker bench`, pytorch_peer.py and jax_peer.py in a log into rows of
docs/results/speed.csv:

    date,card,engine,mode,batch,jobs_fused,img_s_synced,img_s_pipelined,commit

engine is `worker` for this project, `pytorch` or `jax` for the peers; fused rows carry the
aggregate images per second over the fused jobs. Jobs trained side by side (`burn-concurrent`
lines: N jobs, or N fused groups, on N streams of one device) are worker rows of mode
`KERNELS+concurrentN`, jobs_fused the group's size, with their aggregate pipelined rate and no
synced one. Lines whose loss did not fall are
left out (a path that does not train is not a speed).

    python3 worker/bench/speed_rows.py --card "NVIDIA H200" --commit abc1234 bench.log >> docs/results/speed.csv
"""
import argparse
import datetime
import re
import sys

HEADER = "date,card,engine,mode,batch,jobs_fused,img_s_synced,img_s_pipelined,commit"


def fields(line):
    return dict(re.findall(r"(\w+)=(\S+)", line))


def row(line):
    """(engine, mode, batch, fused, synced, pipelined) of a result line, or None."""
    words = line.split()
    f = fields(line)
    if words and words[0] == "burn-concurrent" and "pipelined_img_per_s" in f:
        mode = f"{f.get('kernels')}+concurrent{f.get('jobs')}"
        return "worker", mode, f["batch"], f.get("fuse", "1"), "", f["pipelined_img_per_s"]
    if not words or words[0] not in ("burn", "pytorch", "jax"):
        return None
    if "img_per_s" not in f or "pipelined_img_per_s" not in f:
        return None
    first, last = f.get("loss_first"), f.get("loss_last")
    if first is not None and last is not None and not float(last) < float(first):
        return None
    engine = {"burn": "worker"}.get(words[0], words[0])
    mode = f.get("kernels") or f.get("mode")
    if engine == "worker" and f.get("bn_group"):
        mode = f"{mode}+bn_group{f['bn_group']}"
    if engine == "worker" and f.get("variant", "normal_lr1e-3") != "normal_lr1e-3":
        mode = f"{mode}+{f['variant']}"
    fused = f.get("fuse", "1")
    return engine, mode, f["batch"], fused, f["img_per_s"], f["pipelined_img_per_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", nargs="+")
    ap.add_argument("--card", required=True)
    ap.add_argument("--commit", required=True)
    ap.add_argument("--date", default=datetime.date.today().isoformat())
    ap.add_argument("--header", action="store_true", help="print the CSV header first")
    args = ap.parse_args()
    if args.header:
        print(HEADER)
    for path in args.log:
        with open(path, encoding="utf-8", errors="replace") as log:
            for line in log:
                r = row(line.strip())
                if r:
                    engine, mode, batch, fused, synced, pipelined = r
                    print(f"{args.date},{args.card},{engine},{mode},{batch},{fused},{synced},{pipelined},{args.commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
