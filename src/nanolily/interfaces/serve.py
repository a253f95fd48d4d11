"""Enhancement over HTTP, for pipelines and other programs: ``nanolily serve`` (standard library only).

    POST /enhance   body: an image, as the raw request body or as a file field of a multipart form
                    (a camera RAW file as a form file, whose name's extension tells its kind);
                    query (each optional, the server's defaults otherwise): mode, stride, batch_size,
                    strength, denoise, protect_highlights, white_balance, match_scale, format (png, jpg,
                    webp, tif, bmp, ...), quality. Answers the enhanced image (PNG unless ``format`` says
                    otherwise).
    GET  /health    {"status": "ok", "model": ..., "device": ..., "version": ...}
    GET  /          a small page to try it from a browser

Example:
    curl --data-binary @night.jpg 'http://127.0.0.1:8000/enhance?format=jpg' -o bright.jpg
    curl -F image=@night.jpg http://127.0.0.1:8000/enhance -o bright.png

A bad request gets a JSON body ``{"error": "one line"}`` with status 400 (an unreadable image, a bad
parameter), 404, 405, 411, 413 (larger than ``max_bytes``, or than ``max_pixels`` once decoded) or
500 (enhancing failed, e.g. out of memory; the server goes on).
The model runs one request at a time (it already uses every core); others wait their turn, up to
``max_waiting`` of them, beyond which a request is answered 503 (busy) at once.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from nanolily import __version__
from nanolily.engine.pipeline import MODES, check_mode, enhance_photo
from nanolily.io.images import DEFAULT_MAX_PIXELS, RAW_SUFFIXES, WRITE_FORMATS, ImageError, encode_image, read_image

DEFAULT_MAX_BYTES = 64 << 20
DEFAULT_MAX_WAITING = 16  # requests queued behind the one running; more get 503
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "TIFF": "image/tiff",
                 "BMP": "image/bmp", "AVIF": "image/avif", "HEIF": "image/heif"}
SUFFIXES = {fmt: suffix for suffix, fmt in reversed(list(WRITE_FORMATS.items()))}  # PNG -> .png, JPEG -> .jpg
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class RequestError(Exception):
    """A request that cannot be served: ``status`` and a one-line reason for the client."""

    def __init__(self, status: HTTPStatus, reason: str):
        super().__init__(reason)
        self.status = status


def parse_options(query: str, defaults: dict) -> dict:
    """The enhancement options of a query string (``mode=bloom&strength=0.8``) over ``defaults``
    (the keys of :func:`nanolily.engine.pipeline.enhance_photo` plus ``format`` and ``quality``)."""
    options = dict(defaults)
    for key, values in parse_qs(query, keep_blank_values=True).items():
        value = values[-1].strip().lower()
        if key not in options:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"unknown parameter {key!r}; known: {', '.join(sorted(options))}")
        try:
            options[key] = _parse(key, value)
        except ValueError as e:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"{key}={values[-1]!r}: {e}") from None
    return options


def _parse(key: str, value: str):
    if key == "mode":
        if value not in MODES:
            raise ValueError(f"expected one of {', '.join(MODES)}")
        return value
    if key == "format":
        fmt = WRITE_FORMATS.get("." + value)
        if fmt is None:
            raise ValueError(f"expected one of {', '.join(sorted(s[1:] for s in WRITE_FORMATS))}")
        return fmt
    if key in ("protect_highlights", "white_balance", "match_scale"):
        if value not in TRUE + FALSE:
            raise ValueError("expected true or false")
        return value in TRUE
    if key in ("stride", "quality", "batch_size"):
        number, (low, high) = int(value), {"stride": (1, 224), "quality": (1, 100), "batch_size": (1, 256)}[key]
    else:  # strength, denoise
        number, (low, high) = float(value), {"strength": (0, float("inf")), "denoise": (0, 1)}[key]
    if not (low <= number <= high and math.isfinite(number)):
        raise ValueError(f"expected a number from {low}" + (f" to {high}" if math.isfinite(high) else " up"))
    return number


def upload(body: bytes, content_type: str) -> tuple[bytes, str]:
    """The image bytes of a request body and a name for it: the body itself, or the first file field of
    a ``multipart/form-data`` body."""
    if not content_type.lower().startswith("multipart/form-data"):
        return body, "upload"
    header = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
    form = BytesParser(policy=HTTP).parsebytes(header + body)
    for part in form.iter_parts():
        if part.get_filename() is not None or part.get_param("name", header="content-disposition") in ("image", "file"):
            return part.get_payload(decode=True) or b"", part.get_filename() or "upload"
    raise RequestError(HTTPStatus.BAD_REQUEST, "the form has no file: send the image as a file field named 'image'")


class EnhanceServer(ThreadingHTTPServer):
    """An HTTP server around one loaded model; ``defaults``: as :func:`parse_options`.

    Example (in a program; ``defaults`` as tests/test_serve.py builds them)::

        server = EnhanceServer(("127.0.0.1", 0), load_model(), defaults)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        print(server.url)  # http://127.0.0.1:<a free port>
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], model, defaults: dict, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_pixels: int = DEFAULT_MAX_PIXELS, max_waiting: int = DEFAULT_MAX_WAITING,
                 model_name: str | None = None, quiet: bool = False):
        super().__init__(address, EnhanceHandler)
        self.model, self.defaults, self.quiet = model, defaults, quiet
        self.model_name = model_name or type(model).__name__
        self.max_bytes, self.max_pixels, self.max_waiting = max_bytes, max_pixels, max_waiting
        self.lock = threading.Lock()  # held by the request the model is running
        self.waiting = 0  # requests waiting for it
        self._count = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def enhance(self, data: bytes, name: str, options: dict) -> tuple[bytes, str]:
        """Encoded output and its format name for an uploaded image."""
        try:
            photo = _decode(data, name, self.max_pixels)
        except ImageError as e:
            status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE if "MP limit" in e.reason else HTTPStatus.BAD_REQUEST
            raise RequestError(status, f"{name}: {e.reason}") from None
        settings = {k: v for k, v in options.items() if k not in ("format", "quality")}
        with self._count:
            if self.lock.locked() and self.waiting >= self.max_waiting:
                raise RequestError(HTTPStatus.SERVICE_UNAVAILABLE,
                                   f"busy: {self.waiting} requests are already waiting; try again shortly")
            self.waiting += 1
        with self.lock:
            with self._count:
                self.waiting -= 1
            out = enhance_photo(photo, self.model, **settings)
        return encode_image(out, options["format"], options["quality"]), options["format"]


class EnhanceHandler(BaseHTTPRequestHandler):
    server: EnhanceServer
    server_version = f"nanolily/{__version__}"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/health":
            model = self.server.model
            self._send(HTTPStatus.OK, "application/json", json.dumps({
                "status": "ok", "version": __version__, "model": self.server.model_name,
                "device": str(next(model.parameters()).device), "defaults": _jsonable(self.server.defaults),
            }).encode())
        elif path == "/":
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", PAGE.encode())
        elif path == "/enhance":
            self._error(RequestError(HTTPStatus.METHOD_NOT_ALLOWED, "POST an image to /enhance"))
        else:
            self._error(RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint {path!r}: POST /enhance, GET /health"))

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        try:
            if url.path != "/enhance":
                raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint {url.path!r}: POST /enhance")
            options = parse_options(url.query, self.server.defaults)
            try:
                check_mode(self.server.model, options["mode"])
            except ValueError as e:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"mode={options['mode']}: {e}") from None
            data, name = upload(self._body(), self.headers.get("Content-Type", ""))
            start = time.perf_counter()
            encoded, fmt = self.server.enhance(data, name, options)
        except RequestError as e:
            return self._error(e)
        except Exception as e:  # the server stays up; the client learns what failed
            self.log_error("enhancing failed: %r", e)
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            return self._error(RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, reason))
        stem = name.rsplit(".", 1)[0] if name != "upload" else "enhanced"
        self._send(HTTPStatus.OK, CONTENT_TYPES[fmt], encoded, {
            "Content-Disposition": f'inline; filename="{_header_safe(stem)}_lily{SUFFIXES[fmt]}"',
            "X-Nanolily-Seconds": f"{time.perf_counter() - start:.3f}"})

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send the image with a Content-Length")
        if not length.isdigit():
            raise RequestError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}")
        if int(length) > self.server.max_bytes:
            self._discard(int(length))
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"{int(length)} bytes is more than this server takes ({self.server.max_bytes})")
        body = self.rfile.read(int(length))
        if not body:
            raise RequestError(HTTPStatus.BAD_REQUEST, "empty body: send an image")
        return body

    def _discard(self, length: int, chunk: int = 1 << 20) -> None:
        """Read and drop a refused body, so the client, still sending, gets the answer rather than a reset;
        up to another ``max_bytes``, beyond which the connection is closed instead."""
        if length > 2 * self.server.max_bytes:
            self.close_connection = True  # the unread body would otherwise be taken for the next request
            return
        while length > 0:
            length -= len(self.rfile.read(min(chunk, length))) or length

    def _error(self, e: RequestError) -> None:
        retry = {"Retry-After": "1"} if e.status == HTTPStatus.SERVICE_UNAVAILABLE else None
        self._send(e.status, "application/json", json.dumps({"error": str(e)}).encode(), retry)

    def _send(self, status: HTTPStatus, content_type: str, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)


def _decode(data: bytes, name: str, max_pixels: int):
    """:func:`nanolily.io.images.read_image` of uploaded bytes; a camera RAW file (told by the name's extension,
    as LibRaw needs a file) goes through a temporary file."""
    suffix = Path(name).suffix.lower()
    if suffix not in RAW_SUFFIXES:
        return read_image(io.BytesIO(data), max_pixels=max_pixels, name=name)
    with tempfile.TemporaryDirectory(prefix="nanolily-") as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        return read_image(path, max_pixels=max_pixels)


def _jsonable(options: dict) -> dict:
    return {k: (v.lower() if k == "format" else v) for k, v in options.items()}


def _header_safe(text: str) -> str:
    return "".join(c for c in text if c.isprintable() and c not in '"\\')[:100] or "enhanced"


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>nanolily</title>
<style>body{font:16px system-ui;margin:2em;max-width:70em}img{max-width:48%;margin-right:1%}</style></head>
<body><h1>nanolily</h1><p>Make a dark photo look as if it was shot in good light.</p>
<form id="f"><input type="file" name="image" accept="image/*" required>
strength <input name="strength" type="number" value="1" min="0" max="3" step="0.1">
denoise <input name="denoise" type="number" value="0.5" min="0" max="1" step="0.1">
<button>Enhance</button> <span id="s"></span></form>
<p><img id="a"><img id="b"></p>
<script>
const f = document.getElementById("f"), s = document.getElementById("s");
f.onsubmit = async (e) => {
  e.preventDefault();
  const file = f.image.files[0];
  document.getElementById("a").src = URL.createObjectURL(file);
  s.textContent = "working...";
  const q = new URLSearchParams({strength: f.strength.value, denoise: f.denoise.value, format: "jpg"});
  const r = await fetch("/enhance?" + q, {method: "POST", body: file});
  if (!r.ok) { s.textContent = (await r.json()).error; return; }
  document.getElementById("b").src = URL.createObjectURL(await r.blob());
  s.textContent = r.headers.get("X-Nanolily-Seconds") + " s";
};
</script></body></html>
"""
