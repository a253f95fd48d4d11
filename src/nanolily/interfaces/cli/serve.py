"""nanolily serve: enhance images over HTTP, for other programs and pipelines.

POST an image to /enhance and get the enhanced image back; GET /health says what is loaded; GET /
is a browser app (drop photos, compare before and after, download); GET /docs documents the API. Query
parameters override this command's options for one request: mode, stride, batch_size, strength,
denoise, protect_highlights, white_balance, match_scale, guard_halos, lift_exposure, format, quality.
"""

from __future__ import annotations

import argparse
import sys

from nanolily.io.images import WRITE_FORMATS
from nanolily.interfaces.cli.common import (add_engine_options, add_model_options, add_output_options,
                                            check_mode_option, corrections, error, load_model_or_none, model_source,
                                            positive_int)

EXAMPLES = """examples:
  nanolily serve                                   http://127.0.0.1:8000, the default model
  nanolily serve --host 0.0.0.0 --port 9000 --denoise 0.8
  curl --data-binary @night.jpg 'http://127.0.0.1:8000/enhance?format=jpg' -o bright.jpg
  curl -F image=@night.jpg 'http://127.0.0.1:8000/enhance?strength=0.8' -o bright.png
  curl http://127.0.0.1:8000/health

errors come back as JSON, {"error": "..."}, with status 400 (unreadable image, bad parameter),
404, 405, 411, 413 (too large) or 503 (more than --max-waiting requests queued); requests are
enhanced one at a time"""


def add_parser(sub) -> None:
    from nanolily.interfaces.serve import BODY_TIMEOUT, DEFAULT_MAX_BYTES, DEFAULT_MAX_WAITING

    p = sub.add_parser("serve", help="enhance images over HTTP", description=__doc__, epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 for every interface (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one (default: %(default)s)")
    add_output_options(p, "png", "output format unless a request asks (default: %(default)s)")
    p.add_argument("--max-bytes", type=positive_int, default=DEFAULT_MAX_BYTES,
                   help="refuse request bodies larger than this (default: %(default)s)")
    p.add_argument("--max-waiting", type=int, default=DEFAULT_MAX_WAITING,
                   help="requests that may wait while one is enhanced; more are answered 503 (default: %(default)s)")
    p.add_argument("--body-timeout", type=float, default=BODY_TIMEOUT, metavar="SECONDS",
                   help="answer 408 to an upload that sends nothing for this long (default: %(default)g)")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per request")
    add_engine_options(p)
    add_model_options(p)
    p.set_defaults(run=run, parser=p)


def run(args) -> int:
    import importlib.util

    from nanolily.models.weights import DEFAULT_MODEL

    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        error(f"nanolily serve needs {' and '.join(missing)}: pip install 'nanolily[serve]'")
        return 1
    from nanolily.interfaces.serve import EnhanceServer

    if args.max_waiting < 0:
        args.parser.error(f"--max-waiting must be >= 0, got {args.max_waiting}")
    if args.stride > 224:
        args.parser.error(f"--stride must be at most the tile size 224, got {args.stride}")
    if not args.body_timeout > 0:
        args.parser.error(f"--body-timeout must be > 0, got {args.body_timeout}")
    model = load_model_or_none(args)
    if model is None:
        return 1
    check_mode_option(args, model)
    defaults = dict(mode=args.mode, stride=args.stride, batch_size=args.batch_size, match_scale=args.match_scale,
                    **corrections(args),
                    format=WRITE_FORMATS["." + args.format], quality=args.quality)
    try:
        server = EnhanceServer((args.host, args.port), model, defaults, max_bytes=args.max_bytes,
                               max_pixels=args.max_pixels, max_waiting=args.max_waiting,
                               model_name=model_source(args) or DEFAULT_MODEL, quiet=args.quiet,
                               body_timeout=args.body_timeout)
    except OSError as e:
        error(f"{args.host}:{args.port}: {e.strerror or e}")
        return 1
    print(f"nanolily serving {server.model_name} on {server.url} (the app at /, POST /enhance, GET /health, "
          "GET /docs; Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
