"""The ``nanolily`` command: a few verbs, one module each.

    nanolily demo                          enhance the bundled samples, write a comparison figure
    nanolily enhance photo.jpg             writes photo_lily.jpg beside it
    nanolily enhance shots/ -r -o bright/  a whole folder tree
    nanolily compare photo.jpg -o fig.png  Input | Core | Bloom
    nanolily export -o nanolily.onnx       the model for ONNX Runtime
    nanolily serve                         enhance over HTTP: POST /enhance
    nanolily info                          model, weights, device
"""

from __future__ import annotations

import argparse
import sys

from nanolily import __version__

VERBS = ("enhance", "compare", "explain", "info", "demo", "train", "evaluate", "export", "serve", "data")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nanolily",
        description="Make dark photos look as if they were shot in good light.",
        epilog="Run `nanolily VERB --help` for a verb's options. Start with `nanolily demo`.",
    )
    parser.add_argument("--version", action="version", version=f"nanolily {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    from importlib import import_module

    for verb in VERBS:
        import_module(f".{verb}", __name__).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--version"], ["-V"]):  # answer before building every verb's parser
        print(f"nanolily {__version__}")
        return 0
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("nanolily: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
