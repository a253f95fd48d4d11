"""nanolily train: train NanoLILY from a YAML recipe (see configs/ and docs/training.md)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from a config", description=__doc__,
                       epilog="examples:\n"
                              "  nanolily train --config configs/cpu.yaml --data ../shared/datasets --out runs/cpu\n"
                              "  nanolily train --config configs/cpu.yaml --data ../shared/datasets --out runs/cpu --resume\n"
                              "  torchrun --nproc_per_node 8 -m nanolily.interfaces.cli train --config configs/seed-stage1.yaml ...",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, metavar="FILE", help="a YAML recipe, e.g. configs/cpu.yaml")
    p.add_argument("--data", metavar="DIR", help="data root holding the datasets (default: $NANOLILY_DATA)")
    p.add_argument("--out", metavar="DIR", help="run folder for checkpoints and logs (default: runs/<name>)")
    p.add_argument("--weights-dir", metavar="DIR",
                   help="folder with the VGG19 weights for the perceptual loss "
                        "(default: $NANOLILY_WEIGHTS_DIR, then <data>/../weights)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.ckpt")
    p.add_argument("--until", type=int, metavar="STEP", help="stop after STEP with a checkpoint (resume later)")
    p.add_argument("--force", action="store_true", help="train even if training and test sets overlap")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (YAML syntax), e.g. --set max_steps=100; repeatable")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run, parser=p)


def run(args) -> int:
    from nanolily.training.data import DatasetError, data_root
    from nanolily.training.train import TrainConfig, train

    try:
        import yaml
    except ImportError:
        args.parser.error("training needs PyYAML: pip install 'nanolily[train]'")
    try:
        config = TrainConfig.from_yaml(args.config)
        overrides = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                args.parser.error(f"--set expects KEY=VALUE, got {item!r}")
            overrides[key] = yaml.safe_load(value)
        if overrides:
            config = TrainConfig.from_dict({**config.__dict__, **overrides})
        root = data_root(args.data)
    except (OSError, ValueError, DatasetError) as e:
        args.parser.error(str(e))
    try:
        summary = train(config, root, args.out or f"runs/{config.name}", resume=args.resume, force=args.force,
                        weights_dir=args.weights_dir, progress=not args.quiet, until=args.until)
    except (DatasetError, FileNotFoundError) as e:
        args.parser.error(str(e))
    print(json.dumps(summary, indent=2))
    return 0
