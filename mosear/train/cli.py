"""``mosear train``: fine-tune MoSE experts (or the LoRA baseline) with Ray Train.

Examples::

    mosear train --config cluster/configs/train-tiny.yaml
    mosear train shards=[runs/shards] model.adapter=lora max_steps=50 num_workers=2
    mosear train --config train.yaml --address auto storage_path=s3://bucket/mosear/ckpt use_gpu=true

Rerunning the same command (same ``name`` and ``storage_path``) resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
import json

from mosear.config import describe_config, load_config
from mosear.train.config import TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with TrainConfig fields")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: RAY_ADDRESS, or an embedded Ray)")
    parser.add_argument("--help-config", action="store_true", help="list every config field and exit")
    parser.add_argument("--check", action="store_true",
                        help="only run the input checks (shards, storage, checkpoint) and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. max_steps=50")


def main(args: argparse.Namespace) -> int:
    if args.help_config:
        print(describe_config(TrainConfig))
        return 0
    cfg = load_config(TrainConfig, args.config, args.overrides, ray_address=args.address)
    if args.check:
        from mosear.train.preflight import preflight

        plan = preflight(cfg)
        print(f"ok: {len(plan.shards)} shard(s); storage {cfg.resolved_storage_path}/{plan.run_name}; "
              + (f"resumes from step {plan.resume_step}" if plan.resume_step else "starts at step 0"))
        return 0
    from mosear.train.recipe import run_train

    res = run_train(cfg)
    print(json.dumps({
        "steps": res.steps, "final_loss": res.final_loss, "resumed_from_step": res.resumed_from_step,
        "adapter": str(res.adapter), "metrics": str(res.metrics), "checkpoint": res.checkpoint,
    }, indent=1))
    return 0
