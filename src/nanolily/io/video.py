"""Videos: enhance every frame of a clip and write it with the same frame count, frame rate and audio.

Frames are decoded, enhanced and encoded one at a time, so memory stays that of a frame whatever the
clip's length. The audio streams are copied packet by packet, untouched. Needs PyAV
(``pip install 'nanolily[video]'``).

Flicker: a network enhances each frame on its own, so sensor noise and small changes in a static scene
make its exposure and colour jump from frame to frame. :class:`TemporalSmoother` smooths what the
enhancement decides for the whole frame, its per-channel mean level, with an exponential moving
average that holds still while the input's light does, follows it when it changes, and starts afresh
at a cut (the input's mean level jumps).

Example:
    >>> from nanolily import load_model
    >>> enhance_video("night.mp4", "night_lily.mp4", load_model())  # doctest: +SKIP
    {'frames': 240, 'fps': 30.0, 'audio_streams': 1, 'seconds': 31.2}
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from nanolily.io.images import ImageError

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm")
VIDEO_CODEC = "libx264"  # H.264 in MP4/MOV/MKV: plays everywhere
CUT_CHANGE = 0.25  # a frame whose input mean level moves by more than this share starts a new scene


class TemporalSmoother:
    """Smooths the per-channel mean level of enhanced frames over time.

    Each frame's output is rescaled per channel so that its means follow an exponential moving average
    of the outputs' means. The weight of a new frame follows the input: ``alpha`` while the input's
    mean level holds still (a static scene: the network's frame-to-frame jitter is averaged away),
    ``follow`` times the input's relative change of level when the light changes (a fade is followed
    as it happens), and a cut (a change of more than ``cut``) restarts the average.
    """

    def __init__(self, alpha: float = 0.02, follow: float = 10.0, cut: float = CUT_CHANGE):
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha, self.follow, self.cut = alpha, follow, cut
        self.level = None  # smoothed output means, a (3,) tensor
        self.last_input: float | None = None

    def __call__(self, x: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
        """``x`` the input frame, ``y`` its enhancement, both (1, 3, H, W) in [0, 1]; returns ``y`` smoothed."""
        means = y.mean(dim=(0, 2, 3)).double()  # (3,)
        level_in = float(x.mean())
        change = abs(level_in - self.last_input) / max(self.last_input, 1e-3) if self.level is not None else 1.0
        if change > self.cut:
            self.level = means
        else:
            self.level = self.level + min(1.0, max(self.alpha, self.follow * change)) * (means - self.level)
        self.last_input = level_in
        gains = (self.level / means.clamp_min(1e-6)).float()
        return (y * gains[None, :, None, None]).clamp_(0.0, 1.0)


def enhance_frames(frames: Iterable[np.ndarray], model, smoothing: float = 0.02, **settings) -> Iterator[np.ndarray]:
    """Enhance (H, W, 3) uint8 RGB frames one at a time, as :func:`enhance_video` does: each through
    :func:`nanolily.engine.pipeline.enhance_tensor` with ``settings``, then :class:`TemporalSmoother`."""
    import torch

    from nanolily.engine.pipeline import enhance_tensor

    smoother = TemporalSmoother(smoothing)
    for rgb in frames:
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div_(255)
        y = smoother(x, enhance_tensor(x, model, **settings))
        yield np.ascontiguousarray((y[0].permute(1, 2, 0) * 255).round_().to(torch.uint8).numpy())


def enhance_video(source: str | os.PathLike, target: str | os.PathLike, model, smoothing: float = 0.02,
                  progress: bool = False, overwrite: bool = False, crf: int = 18, **settings) -> dict:
    """Enhance every frame of ``source`` into ``target`` (written atomically), copying its audio.

    ``settings`` are :func:`nanolily.engine.pipeline.enhance_tensor`'s options (mode, strength,
    corrections, ...); ``smoothing`` the least weight of a new frame in :class:`TemporalSmoother` (1: none);
    ``crf`` the H.264 quality (lower is better; 18 is visually lossless).
    Returns the frame count, frame rate, audio stream count and seconds taken.
    Raises :class:`ImageError` naming the file and the reason when the clip cannot be read or written.
    """
    try:
        import av
    except ImportError:
        raise ImageError(source, "videos need PyAV: pip install 'nanolily[video]'") from None
    from tqdm.auto import tqdm

    source, target = Path(source), Path(target)
    if target.exists() and not overwrite:
        raise ImageError(target, "already exists (use --overwrite to replace it)")
    start = time.perf_counter()
    try:
        inp = av.open(str(source))
    except (av.FFmpegError, OSError) as e:
        raise ImageError(source, f"cannot read this video ({_first_line(e)})") from None
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=target.suffix)
    os.close(fd)
    frames = 0
    try:
        with inp:
            if not inp.streams.video:
                raise ImageError(source, "no video stream")
            video = inp.streams.video[0]
            rate = video.average_rate or video.guessed_rate or Fraction(30)
            audio = list(inp.streams.audio)
            with av.open(tmp, "w", format=_container_format(target)) as out:
                encoder = out.add_stream(VIDEO_CODEC, rate=rate)
                encoder.width, encoder.height = video.codec_context.width // 2 * 2, video.codec_context.height // 2 * 2
                encoder.pix_fmt = "yuv420p"
                encoder.options = {"crf": str(crf)}
                copies = {s.index: out.add_stream_from_template(s) for s in audio}
                bar = tqdm(total=video.frames or None, unit="frame", desc=source.name, disable=not progress)

                def decoded():  # the video's frames, muxing the audio packets met on the way
                    for packet in inp.demux(video, *audio):
                        if packet.stream.index in copies:
                            if packet.dts is not None:
                                packet.stream = copies[packet.stream.index]
                                out.mux(packet)
                            continue
                        for frame in packet.decode():
                            yield frame.to_ndarray(format="rgb24")[:encoder.height, :encoder.width]

                for pixels in enhance_frames(decoded(), model, smoothing, **settings):
                    enhanced = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                    enhanced.pts = frames  # in the encoder's time base, 1 / rate: one tick a frame
                    out.mux(encoder.encode(enhanced))
                    frames += 1
                    bar.update()
                out.mux(encoder.encode())  # flush the encoder
                bar.close()
        os.replace(tmp, target)
    except av.FFmpegError as e:
        raise ImageError(source, f"cannot process this video ({_first_line(e)})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"frames": frames, "fps": float(rate), "audio_streams": len(audio),
            "seconds": time.perf_counter() - start}


def _container_format(path: Path) -> str | None:
    return {".m4v": "mp4", ".mkv": "matroska"}.get(path.suffix.lower())


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__
