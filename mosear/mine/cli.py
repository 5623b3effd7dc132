"""``mosear mine``: mine audio/visual emotion conflicts from shards (see docs/mining.md)."""

from __future__ import annotations

import argparse
import json

from mosear.config import describe_config, load_config
from mosear.mine.config import MineConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="MineConfig YAML (see mosear/mine/configs/samples.yaml)")
    parser.add_argument("--help-config", action="store_true", help="list every config field and exit")
    parser.add_argument("--list-stages", action="store_true", help="print the stages this install can resolve")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. shards=runs/shards workers=2")


def main(args: argparse.Namespace) -> int:
    if args.help_config:
        print(describe_config(MineConfig))
        return 0
    if args.list_stages:
        import sys

        from mosear.mine.stage_pipeline import available_stages

        try:
            found = available_stages()
        except KeyError as exc:  # a package registers a built-in's name for another class
            print(f"mosear mine: {exc.args[0]}", file=sys.stderr)
            return 2
        for name, where in sorted(found.items()):
            print(f"{name:20s} {where}")
        return 0
    cfg = load_config(MineConfig, args.config, args.overrides)
    from mosear.mine.run import run_mine

    res = run_mine(cfg)
    s = res.summary
    print(f"mined {res.shards_mined} shard(s), resumed past {res.shards_skipped}, in {res.seconds:.1f} s")
    print(f"subsets: {json.dumps(s['subsets'])}  dropped: {s['dropped']}")
    sp = s["splits"]
    print(f"splits (grouped by {sp['grouping']}): {json.dumps(sp['rows'])}")
    print("people: " + "; ".join(f"{k}: {', '.join(v) or '-'}" for k, v in sp.get("people", {}).items()))
    for w in s["warnings"]:
        print(f"WARNING {w}")
    for m, c in s["classifiers"].items():
        print(f"{m:6s} cross-fitted accuracy {c['cross_fitted_accuracy']}  ({c['grouping']})")
    print(f"outputs in {res.output}: conflicts.parquet, {{train,validation,test}}/*.json, *.json, "
          "train_mix.parquet (train rows), summary.json, summary.png")
    if res.failed:  # only with allow_partial=true; otherwise run_mine raised (exit 1)
        print(f"PARTIAL: {len(res.failed)} shard(s) missing (allow_partial): {', '.join(sorted(res.failed)[:5])}")
    return 0
