#!/usr/bin/env python3
"""W9: SOP's own benchmark (W1 shape) through the sop4py Python API.

The same file runs unchanged against SOP-rs's ``sop`` package and against ``sop4py==2.3.3``
from PyPI; it uses only API names both share. Shape (per variant, on a fresh temp folder):

  insert  N x Item(key=f"key_{i}", value=f"value_{i}") in one ForWriting transaction + commit
  read    N point reads (get_values) in one ForReading transaction
  delete  N removes in one ForWriting transaction + commit

Variants: ``item`` (one add/get_values/remove call per item) and ``batch`` (lists of 1,000
Items / keys per call). Each (implementation, variant, phase) prints one JSON line.

    python w9.py --n 100000                    # run, JSON lines on stdout
    python w9.py --n 100000 --out res.jsonl    # also append the lines to res.jsonl
    python w9.py --report a.jsonl b.jsonl      # ratio table ours/sop4py from saved lines
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time

BATCH = 1000
PHASES = ("insert", "read", "delete")
VARIANTS = ("item", "batch")


def impl_name(sop) -> str:
    # SOP-rs's package carries its native module as sop._sop; sop4py is ctypes over a Go .so.
    return "sop-rs" if hasattr(sop, "_sop") else "sop4py"


def database_type(sop):
    # sop4py does not re-export DatabaseType from `sop`; both have it in sop.transaction or sop.
    dt = getattr(sop, "DatabaseType", None)
    if dt is None:
        dt = importlib.import_module("sop.transaction").DatabaseType
    return dt


def run_variant(sop, variant: str, n: int, base_tmp: str | None) -> dict[str, float]:
    Context, Database, DatabaseOptions = sop.Context, sop.Database, sop.DatabaseOptions
    TransactionMode, BtreeOptions, Item = sop.TransactionMode, sop.BtreeOptions, sop.Item
    DatabaseType = database_type(sop)

    keys = [f"key_{i}" for i in range(n)]
    vals = [f"value_{i}" for i in range(n)]
    folder = tempfile.mkdtemp(prefix=f"w9-{variant}-", dir=base_tmp)
    out: dict[str, float] = {}
    try:
        ctx = Context()
        db = Database(DatabaseOptions(stores_folders=[folder], type=DatabaseType.Standalone))
        name = "w9"

        def store(t):
            # new_btree on an existing name opens it (both implementations); sop4py's open_btree
            # would mark the store as non-primitive-key.
            return db.new_btree(ctx, name, t, BtreeOptions(is_unique=True, slot_length=1000))

        # Create the store in its own (untimed) transaction.
        t = db.begin_transaction(ctx, TransactionMode.ForWriting.value)
        store(t)
        t.commit(ctx)

        # insert --------------------------------------------------------------------------
        t0 = time.perf_counter()
        t = db.begin_transaction(ctx, TransactionMode.ForWriting.value)
        b = store(t)
        if variant == "item":
            add = b.add
            for k, v in zip(keys, vals):
                if not add(ctx, Item(key=k, value=v)):
                    raise RuntimeError(f"add {k} failed")
        else:
            for s in range(0, n, BATCH):
                batch = [Item(key=keys[i], value=vals[i]) for i in range(s, min(s + BATCH, n))]
                if not b.add(ctx, batch):
                    raise RuntimeError(f"add batch at {s} failed")
        t.commit(ctx)
        out["insert"] = n / (time.perf_counter() - t0)

        # read ----------------------------------------------------------------------------
        t0 = time.perf_counter()
        t = db.begin_transaction(ctx, TransactionMode.ForReading.value)
        b = store(t)
        bad = 0
        if variant == "item":
            get_values = b.get_values
            for k, v in zip(keys, vals):
                got = get_values(ctx, Item(key=k))
                if got[0].value != v:
                    bad += 1
        else:
            for s in range(0, n, BATCH):
                e = min(s + BATCH, n)
                got = b.get_values(ctx, [Item(key=keys[i]) for i in range(s, e)])
                for j, it in enumerate(got):
                    if it.value != vals[s + j]:
                        bad += 1
        t.commit(ctx)
        out["read"] = n / (time.perf_counter() - t0)
        if bad:
            raise RuntimeError(f"{bad} reads returned a wrong value")

        # delete --------------------------------------------------------------------------
        t0 = time.perf_counter()
        t = db.begin_transaction(ctx, TransactionMode.ForWriting.value)
        b = store(t)
        if variant == "item":
            remove = b.remove
            for k in keys:
                if not remove(ctx, k):
                    raise RuntimeError(f"remove {k} failed")
        else:
            for s in range(0, n, BATCH):
                if not b.remove(ctx, keys[s:s + BATCH]):
                    raise RuntimeError(f"remove batch at {s} failed")
        t.commit(ctx)
        out["delete"] = n / (time.perf_counter() - t0)

        # Sanity: the store is empty afterwards.
        t = db.begin_transaction(ctx, TransactionMode.ForReading.value)
        left = store(t).count()
        t.commit(ctx)
        if left != 0:
            raise RuntimeError(f"{left} items left after delete")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def run(args) -> int:
    import sop

    if hasattr(sop, "Logger") and hasattr(sop, "LogLevel"):
        sop.Logger.configure(sop.LogLevel.Warn)  # sop4py logs every find/new_btree at Info
    impl = impl_name(sop)
    sink = open(args.out, "a") if args.out else None
    for variant in args.variants.split(","):
        res = run_variant(sop, variant, args.n, args.tmp)
        for phase in PHASES:
            line = json.dumps({
                "workload": "W9", "impl": impl, "version": getattr(sop, "__version__", "?"),
                "variant": variant, "phase": phase, "n": args.n, "ops_per_s": round(res[phase], 1),
                "python": platform.python_version(),
            })
            print(line, flush=True)
            if sink:
                sink.write(line + "\n")
    if sink:
        sink.close()
    return 0


def report(paths: list[str]) -> int:
    rows: dict[tuple[str, str, str], float] = {}
    n = None
    for p in paths:
        with open(p) as f:
            for line in f:
                line = line.strip()
                if not line.startswith("{"):
                    continue
                r = json.loads(line)
                if r.get("workload") != "W9":
                    continue
                k = (r["impl"], r["variant"], r["phase"])
                rows[k] = max(rows.get(k, 0.0), r["ops_per_s"])  # best of the runs given
                n = r["n"]
    print(f"\nW9 (N = {n}), ops/s (best of the runs given); ratio = sop-rs / sop4py")
    print(f"| {'variant':<7} | {'phase':<6} | {'sop-rs':>12} | {'sop4py 2.3.3':>12} | {'ratio':>8} |")
    print(f"|{'-' * 9}|{'-' * 8}|{'-' * 14}|{'-' * 14}|{'-' * 10}|")
    for v in VARIANTS:
        for ph in PHASES:
            ours, theirs = rows.get(("sop-rs", v, ph)), rows.get(("sop4py", v, ph))
            fmt = lambda x: f"{x:,.0f}" if x is not None else "-"
            ratio = f"{ours / theirs:.1f}x" if ours and theirs else "-"
            print(f"| {v:<7} | {ph:<6} | {fmt(ours):>12} | {fmt(theirs):>12} | {ratio:>8} |")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=int(os.environ.get("N", 100_000)))
    ap.add_argument("--variants", default=",".join(VARIANTS), help="item,batch")
    ap.add_argument("--tmp", default=None, help="parent folder of the per-run temp folders")
    ap.add_argument("--out", default=None, help="append the JSON lines to this file")
    ap.add_argument("--report", nargs="+", metavar="JSONL", help="print the ratio table from saved lines")
    args = ap.parse_args()
    if args.report:
        return report(args.report)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
