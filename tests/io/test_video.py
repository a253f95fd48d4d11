from fractions import Fraction

import numpy as np
import pytest

from nanolily.interfaces.cli import main

av = pytest.importorskip("av")

FPS, FRAMES, SIZE = 12, 24, (96, 128)  # (height, width)


def make_clip(path, with_audio: bool = True, seed: int = 0):
    """A static dark scene with fresh sensor noise in every frame, and a one-tone audio track."""
    rng = np.random.default_rng(seed)
    h, w = SIZE
    y, x = np.mgrid[0:h, 0:w]
    scene = np.stack([12 + 10 * np.sin(x / 9), 10 + 8 * np.cos(y / 7), 8 + 6 * np.sin((x + y) / 11)], -1)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.options = {"crf": "10"}
        audio = out.add_stream("aac", rate=16000) if with_audio else None
        for i in range(FRAMES):
            noisy = np.clip(scene + rng.normal(0, 3, scene.shape), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(noisy, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if audio is not None:
            samples = (0.2 * np.sin(2 * np.pi * 440 * np.arange(16000 * FRAMES // FPS) / 16000)).astype(np.float32)
            for start in range(0, len(samples), 1024):
                chunk = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 16000, start
                out.mux(audio.encode(chunk))
            out.mux(audio.encode())
    return path


def mean_levels(path) -> tuple[np.ndarray, Fraction, int]:
    with av.open(str(path)) as clip:
        stream = clip.streams.video[0]
        levels = [frame.to_ndarray(format="rgb24").mean() / 255 for frame in clip.decode(stream)]
        return np.array(levels), stream.average_rate, len(clip.streams.audio)


def test_a_clip_keeps_its_frames_rate_and_audio(tmp_path):
    clip = make_clip(tmp_path / "night.mp4")
    assert main(["enhance", str(clip), "-q"]) == 0  # the default model
    levels_in, rate_in, audio_in = mean_levels(clip)
    levels_out, rate_out, audio_out = mean_levels(tmp_path / "night_lily.mp4")
    assert len(levels_out) == len(levels_in) == FRAMES and rate_out == rate_in and audio_out == audio_in == 1
    assert levels_out.mean() > 2 * levels_in.mean()  # brightened


def test_no_flicker_on_a_static_noisy_scene(tmp_path):
    """The frame-to-frame change of the enhanced frames' mean level is no larger than the input's (the
    frames as they go to the encoder; H.264 then adds its own small changes)."""
    from nanolily import load_model
    from nanolily.io.video import enhance_frames

    clip = make_clip(tmp_path / "night.mp4", with_audio=False)
    with av.open(str(clip)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    model = load_model("nanolily-v2", device="cpu")
    change = {}
    for name, smoothing in (("smoothed", 0.02), ("frame by frame", 1.0)):
        levels = [f.mean() / 255 for f in enhance_frames(frames, model, smoothing)]
        change[name] = np.abs(np.diff(levels)).mean()
    change["input"] = np.abs(np.diff([f.mean() / 255 for f in frames])).mean()
    assert change["smoothed"] <= change["input"] < change["frame by frame"]


def test_smoothing_holds_still_follows_changes_and_restarts_at_a_cut():
    import torch

    from nanolily.io.video import TemporalSmoother

    smoother = TemporalSmoother(alpha=0.1, follow=10.0, cut=0.25)

    def level(inp: float, out: float) -> float:
        return float(smoother(torch.full((1, 3, 4, 4), inp), torch.full((1, 3, 4, 4), out)).mean())

    assert level(0.05, 0.40) == pytest.approx(0.40)  # the first frame as it is
    assert level(0.05, 0.50) == pytest.approx(0.41)  # a still input: weight alpha
    assert level(0.055, 0.50) == pytest.approx(0.41 + 1.0 * 0.09)  # the light rose 10 %: weight 10 x 0.1
    assert level(0.2, 0.80) == pytest.approx(0.80)  # a cut: afresh
    none = TemporalSmoother(alpha=1.0)
    assert float(none(torch.full((1, 3, 2, 2), 0.1), torch.full((1, 3, 2, 2), 0.3)).mean()) == pytest.approx(0.3)
    assert float(none(torch.full((1, 3, 2, 2), 0.1), torch.full((1, 3, 2, 2), 0.6)).mean()) == pytest.approx(0.6)


def test_an_unreadable_video_is_one_line_and_the_batch_goes_on(tmp_path, capsys):
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    make_clip(tmp_path / "good.mov", with_audio=False)
    assert main(["enhance", str(tmp_path), "-o", str(tmp_path / "out"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "broken.mp4: cannot read this video" in err and "Traceback" not in err
    assert (tmp_path / "out" / "good.mov").exists() and not (tmp_path / "out" / "broken.mp4").exists()
