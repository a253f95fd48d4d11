"""nanolily data check: find training images whose content is in a test set (leakage)."""

from __future__ import annotations

import argparse
import sys

EPILOG = """example (a full LoL-v1 copy against LoL-v2-real Test):
  nanolily data check --train LOL-v1 --test LOL-v2/Real_captured --test-split test.txt

Layouts are detected from folder names (our485/eval15, Train/Test, low/+high/); every subset present
is compared. Exit status: 0 no overlap, 1 overlap found, 2 usage error."""


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="dataset tools (leakage check)", description=__doc__)
    verbs = p.add_subparsers(dest="data_verb", metavar="ACTION", required=True)
    c = verbs.add_parser("check", help="compare training and test images by content", description=__doc__,
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--train", required=True, metavar="DIR", help="training dataset folder")
    c.add_argument("--test", required=True, metavar="DIR", help="test dataset folder")
    c.add_argument("--train-split", metavar="FILE", help="only these training ids")
    c.add_argument("--test-split", metavar="FILE", help="only these test ids")
    c.add_argument("-q", "--quiet", action="store_true", help="only the summary line")
    c.set_defaults(run=run, parser=c)


def run(args) -> int:
    from nanolily.training.data import DatasetError, all_pairs, find_overlaps

    try:
        train = all_pairs(args.train, split=args.train_split)
        test = all_pairs(args.test, split=args.test_split)
    except DatasetError as e:
        args.parser.error(str(e))
    overlaps = find_overlaps(train, test, progress=not args.quiet)
    if not args.quiet:
        for train_id, test_id, kind in overlaps:
            what = "same low image" if kind == "low" else "same reference (same scene)"
            print(f"train {train_id} <-> test {test_id}: {what}")
    low = {t for _, t, k in overlaps if k == "low"}
    scene = {t for _, t, k in overlaps}
    print(f"{len(train)} training pairs, {len(test)} test pairs: {len(low)} test low images are in the training "
          f"set, {len(scene)} test pairs share a low image or reference with it", file=sys.stderr if overlaps else sys.stdout)
    return 1 if overlaps else 0
