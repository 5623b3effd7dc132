"""``mosear shard``: decode a corpus into WebDataset shards.

    mosear shard corpus=datasets/samples/corpus.yaml output=runs/samples/shards
    mosear shard --config shard.yaml num_frames=8 workers=2
    mosear shard --help-config
"""

from __future__ import annotations

import argparse

from mosear.config import describe_config, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file with ShardConfig fields")
    parser.add_argument("--address", help="Ray cluster address (default: embedded local Ray)")
    parser.add_argument("--help-config", action="store_true", help="list the config fields and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (YAML values)")


def main(args: argparse.Namespace) -> int:
    from mosear.shards.config import ShardConfig

    if args.help_config:
        print(describe_config(ShardConfig))
        return 0
    cfg = load_config(ShardConfig, args.config, args.overrides, ray_address=args.address)
    from mosear.shards.run import run_shard

    result = run_shard(cfg)  # OutputConflictError: exit 3 (refused), failed shards: exit 1 (mosear.cli)
    print(result.summary())
    return 0
