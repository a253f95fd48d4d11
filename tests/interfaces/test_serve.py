import io
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from nanolily.engine.pipeline import (DEFAULT_DENOISE, DEFAULT_MODE, DEFAULT_PROTECT_HIGHLIGHTS, DEFAULT_STRIDE,
                                      enhance_photo)
from nanolily.io.images import encode_image, read_image
from nanolily.interfaces.serve import EnhanceServer, RequestError, parse_options, upload
from nanolily.models.weights import load_model

from ..conftest import write_dng

DEFAULTS = dict(mode=DEFAULT_MODE, stride=DEFAULT_STRIDE, batch_size=1, strength=1.0,
                protect_highlights=DEFAULT_PROTECT_HIGHLIGHTS, denoise=DEFAULT_DENOISE, white_balance=False,
                match_scale=True, guard_halos=True, lift_exposure=True, format="PNG", quality=95)


def dark_png(width=96, height=64) -> bytes:
    pixels = (np.random.default_rng(0).random((height, width, 3)) * 50).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("fastapi")
    server = EnhanceServer(("127.0.0.1", 0), load_model(device="cpu"), DEFAULTS, max_bytes=1 << 20, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.wait_started()
    yield server
    server.shutdown()
    thread.join(10)  # uvicorn closes its listener on the way out: before the socket itself is closed
    server.server_close()


def request(server, path, data=None, headers=None, method=None):
    req = urllib.request.Request(server.url + path, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.headers, response.read()  # headers: case-insensitive
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_raw_body_is_enhanced_as_the_library_does(server):
    data = dark_png()
    status, headers, body = request(server, "/enhance", data, {"Content-Type": "image/png"})
    assert status == 200 and headers["Content-Type"] == "image/png"
    expected = enhance_photo(read_image(io.BytesIO(data)), server.model, **{
        k: v for k, v in DEFAULTS.items() if k not in ("format", "quality")})
    assert body == encode_image(expected, "PNG")
    assert float(headers["X-Nanolily-Seconds"]) >= 0


def test_multipart_upload_and_query_options(server):
    data = dark_png()
    boundary = "nanolilyboundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"night.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    status, headers, body = request(server, "/enhance?format=tif&strength=0&denoise=0", form,
                                    {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200 and headers["Content-Type"] == "image/tiff"
    assert headers["Content-Disposition"] == 'inline; filename="night_lily.tif"'
    out = np.asarray(Image.open(io.BytesIO(body)), dtype=float)
    original = np.asarray(Image.open(io.BytesIO(data)), dtype=float)
    assert out.shape == original.shape
    assert np.abs(out - original).max() <= 1  # strength 0 without denoising gives the input back


def test_bad_requests_get_json_errors(server):
    status, _, body = request(server, "/enhance", b"not an image", {"Content-Type": "image/jpeg"})
    assert status == 400 and "upload" in json.loads(body)["error"]
    status, _, body = request(server, "/enhance?mode=sideways", dark_png())
    assert status == 400 and "mode" in json.loads(body)["error"]
    status, _, body = request(server, "/enhance?colour=red", dark_png())
    assert status == 400 and "unknown parameter" in json.loads(body)["error"]
    status, _, body = request(server, "/enhance", b"x" * ((1 << 20) + 1))
    assert status == 413
    status, _, _ = request(server, "/nowhere", dark_png())
    assert status == 404
    status, _, _ = request(server, "/enhance")
    assert status == 405


def test_health_and_page(server):
    status, headers, body = request(server, "/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["device"] == "cpu"
    assert health["defaults"]["format"] == "png"
    status, headers, body = request(server, "/")
    assert status == 200 and b"/enhance" in body


def test_parse_options():
    options = parse_options("mode=bloom&batch_size=4&strength=0.5&protect_highlights=false&format=webp&quality=80"
                            "&match_scale=0&guard_halos=no&lift_exposure=off", DEFAULTS)
    assert options == {**DEFAULTS, "mode": "bloom", "batch_size": 4, "strength": 0.5, "protect_highlights": False,
                       "match_scale": False, "guard_halos": False, "lift_exposure": False, "format": "WEBP",
                       "quality": 80}
    for query in ("denoise=2", "stride=0", "quality=x", "strength=inf", "white_balance=maybe", "match_scale=2",
                  "guard_halos=2", "lift_exposure=1.5", "format=gif"):
        with pytest.raises(RequestError):
            parse_options(query, DEFAULTS)


def test_format_same_keeps_the_uploads_own():
    from nanolily.interfaces.serve import same_format

    assert parse_options("format=same", DEFAULTS)["format"] == "same"
    assert [same_format(n) for n in ("night.JPG", "scan.tif", "shot.dng", "upload", "clip.gif")] == \
        ["JPEG", "TIFF", "TIFF", "PNG", "PNG"]  # camera RAW: a 16-bit TIFF; no name or unwritable: PNG


def test_upload_without_a_file_field():
    form = b"--b\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--b--\r\n"
    with pytest.raises(RequestError, match="no file"):
        upload(form, "multipart/form-data; boundary=b")
    assert upload(b"abc", "image/png") == (b"abc", "upload")


def test_busy_server_answers_503_beyond_max_waiting(server):
    server.max_waiting = 0
    try:
        with server.lock:  # as if a request were being enhanced
            status, headers, body = request(server, "/enhance", dark_png())
        assert status == 503 and "busy" in json.loads(body)["error"] and headers["Retry-After"] == "1"
        status, _, _ = request(server, "/enhance", dark_png())
        assert status == 200
    finally:
        server.max_waiting = 16


def test_camera_raw_upload_is_developed(server, tmp_path):
    pytest.importorskip("rawpy")
    raw = write_dng(tmp_path / "night.dng", np.full((40, 60), 2000)).read_bytes()
    form = (b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"night.dng\"\r\n\r\n" + raw
            + b"\r\n--b--\r\n")
    status, headers, body = request(server, "/enhance?format=tif", form, {"Content-Type": "multipart/form-data; boundary=b"})
    assert status == 200 and headers["Content-Disposition"] == 'inline; filename="night_lily.tif"'
    assert np.asarray(Image.open(io.BytesIO(body))).shape[:2] == (40, 60)


def test_a_failing_model_gets_a_500_and_the_server_goes_on(server, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory\nmore detail")

    monkeypatch.setattr("nanolily.interfaces.serve.enhance_photo", broken)
    status, _, body = request(server, "/enhance", dark_png())
    assert status == 500 and json.loads(body)["error"] == "RuntimeError: out of memory"
    monkeypatch.undo()
    assert request(server, "/health")[0] == 200 and request(server, "/enhance", dark_png())[0] == 200


def raw_exchange(server, head: bytes, body: bytes = b"", wait: float = 10.0) -> bytes:
    """Send bytes on a fresh connection and return what comes back (a stalled client: the body is short)."""
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as conn:
        conn.sendall(head + body)
        answer = b""
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


def test_every_method_and_path_gets_a_json_error(server):
    for method in ("PUT", "DELETE", "PATCH"):
        status, headers, body = request(server, "/enhance", b"x", method=method)
        assert status == 405 and "POST an image" in json.loads(body)["error"]
    status, headers, body = request(server, "/nowhere")
    assert status == 404 and headers["Content-Type"] == "application/json"


def test_size_is_refused_from_the_headers_before_the_body(server):
    start = time.perf_counter()
    answer = raw_exchange(server, b"POST /enhance HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                                  b"Content-Length: 73400320\r\n\r\n")  # 70 MB announced, none sent
    assert answer.startswith(b"HTTP/1.1 413") and b"more than this server takes" in answer
    assert time.perf_counter() - start < 5


def test_a_stalled_upload_gets_a_408(server):
    server.body_timeout = 0.5
    try:
        answer = raw_exchange(server, b"POST /enhance HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                                      b"Content-Length: 1000\r\n\r\n", b"only a little")
        assert answer.startswith(b"HTTP/1.1 408") and b"stalled" in answer
    finally:
        server.body_timeout = 30.0


def test_processing_and_queue_times_are_separate_headers(server):
    status, headers, _ = request(server, "/enhance", dark_png())
    assert status == 200 and float(headers["X-Nanolily-Seconds"]) > 0 and float(headers["X-Nanolily-Queue-Seconds"]) >= 0


def test_openapi_schema_and_docs(server):
    status, _, body = request(server, "/openapi.json")
    schema = json.loads(body)
    assert status == 200 and "/enhance" in schema["paths"] and "/health" in schema["paths"]
    assert {p["name"] for p in schema["paths"]["/enhance"]["post"]["parameters"]} >= {"mode", "strength", "format"}
    status, _, body = request(server, "/docs")
    assert status == 200 and b"swagger" in body.lower()


def test_load_every_answer_is_200_or_503_and_memory_stays_flat(server):
    """24 clients at once against a queue of 4, then 100 requests one after another (loopback only)."""
    from concurrent.futures import ThreadPoolExecutor

    def rss_mb() -> float:
        return next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmRSS"))

    data = dark_png(160, 120)
    server.max_waiting = 4
    try:
        with ThreadPoolExecutor(24) as pool:
            statuses = list(pool.map(lambda _: request(server, "/enhance", data)[0], range(24)))
        assert set(statuses) <= {200, 503} and 200 in statuses
        for _ in range(20):  # warm-up: the allocator settles
            assert request(server, "/enhance", data)[0] == 200
        before = rss_mb()
        for _ in range(100):
            assert request(server, "/enhance", data)[0] == 200
        assert rss_mb() - before < 50
    finally:
        server.max_waiting = 16



def test_client_errors_leave_no_traceback_in_the_log(random_weights):
    """``nanolily serve`` as a process: every kind of bad client, then Ctrl-C; its log has one line per
    request and no traceback."""
    import re
    import signal
    import socket
    import subprocess
    import sys
    import types

    pytest.importorskip("fastapi")
    process = subprocess.Popen([sys.executable, "-m", "nanolily.interfaces.cli", "serve", "--port", "0",
                                "--weights", str(random_weights), "--device", "cpu", "--max-bytes", "20000",
                                "--body-timeout", "1"], stderr=subprocess.PIPE, text=True)
    try:
        first = process.stderr.readline()
        host, port = re.search(r"http://([\d.]+):(\d+)", first).groups()
        url = f"http://{host}:{port}"

        def raw(data: bytes, wait: float = 0.0) -> bytes:
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(data)
                time.sleep(wait)
                try:
                    return s.recv(4096)
                except OSError:
                    return b""

        server = types.SimpleNamespace(url=url)  # what request() reads
        assert request(server, "/enhance", b"not an image", {"Content-Type": "image/jpeg"})[0] == 400
        assert request(server, "/enhance?strength=x", dark_png())[0] == 400
        assert request(server, "/nowhere")[0] == 404
        assert request(server, "/enhance", b"x", method="PUT")[0] == 405
        assert request(server, "/enhance", b"x" * 30000)[0] == 413
        assert b" 408 " in raw(b"POST /enhance HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 100, 2)
        raw(b"POST /enhance HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 100)  # hangs up mid-upload
        assert b" 400 " in raw(b"NONSENSE\r\n\r\n")
        assert request(server, "/enhance", dark_png())[0] == 200  # still serving
        time.sleep(1.5)  # the hung-up upload's timeout passes
    finally:
        process.send_signal(signal.SIGINT)
        _, log = process.communicate(timeout=30)
    assert "Traceback" not in log and "Exception" not in log, log
