import io
import json
import threading
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
                match_scale=True, format="PNG", quality=95)


def dark_png(width=96, height=64) -> bytes:
    pixels = (np.random.default_rng(0).random((height, width, 3)) * 50).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server():
    server = EnhanceServer(("127.0.0.1", 0), load_model(device="cpu"), DEFAULTS, max_bytes=1 << 20, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def request(server, path, data=None, headers=None, method=None):
    req = urllib.request.Request(server.url + path, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


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
                            "&match_scale=0", DEFAULTS)
    assert options == {**DEFAULTS, "mode": "bloom", "batch_size": 4, "strength": 0.5, "protect_highlights": False,
                       "match_scale": False, "format": "WEBP", "quality": 80}
    for query in ("denoise=2", "stride=0", "quality=x", "strength=inf", "white_balance=maybe", "match_scale=2",
                  "format=gif"):
        with pytest.raises(RequestError):
            parse_options(query, DEFAULTS)


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
