"""Enhance a photo collection too large for one machine with Ray Data (the ``[ray]`` extra):
``nanolily enhance SOURCE -o DEST --ray`` or :func:`enhance_collection`.

Files are listed once by the driver, as ``nanolily enhance`` lists a folder (:func:`list_photos`),
read by Ray Data (a local folder or any URI pyarrow reads: ``s3://``, ``gs://``, ...), enhanced by a
pool of model actors (one model loaded per actor, ``map_batches``), and written by the actors straight
to ``DEST`` with the folder tree mirrored. A file that cannot be read, enhanced or written
is reported with its reason and the run goes on; the driver receives one small row per file.

On a cluster (nanolily installed on every node)::

    ray start --head                       # then `ray start --address HEAD:6379` on each worker node
    nanolily enhance s3://bucket/night/ -o s3://bucket/bright/ --ray --ray-address auto
"""

from __future__ import annotations

import logging
import posixpath
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nanolily.io.images import WRITE_FORMATS

@dataclass
class CollectionReport:
    """What a run did: counts, and ``(source, reason)`` for each file that failed."""
    done: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)


def output_name(relative: str, fmt: str | None, apart: bool = False) -> str:
    """The output's path under DEST for an input's path under SOURCE (``/``-separated): the same path,
    with ``fmt``'s extension when given, else the input's where nanolily writes it (a 16-bit TIFF for
    camera RAW files, PNG for the rest); ``apart``: the input's extension added to the name, for an
    input whose output another one's would share (:func:`kept_apart_paths`).

    >>> output_name("2024/night.jpg", None), output_name("a.NEF", None), output_name("b.gif", "webp")
    ('2024/night.jpg', 'a.tif', 'b.webp')
    >>> output_name("b.gif", None, apart=True)
    'b_gif.png'
    """
    from nanolily.interfaces.cli.common import output_suffix

    stem, suffix = posixpath.splitext(relative)
    return stem + ("_" + suffix[1:].lower() if apart else "") + ("." + fmt if fmt else output_suffix(Path(relative)))


def relative_path(path: str, root: str) -> str:
    """``path`` relative to the source ``root`` (``/``-separated); a file's own name when it is ``root``."""
    return posixpath.relpath(path, root) if path != root else posixpath.basename(path)


def kept_apart_paths(paths: list[str], root: str, fmt: str | None) -> frozenset[str]:
    """The inputs whose output another input's would share, so that :func:`output_name` keeps them apart
    (``apart=True``) as ``nanolily enhance`` does: ``b.gif`` beside ``b.png`` becomes ``b_gif.png``."""
    from nanolily.interfaces.cli.common import kept_apart

    relatives = [relative_path(path, root) for path in paths]
    pairs = [(relative, output_name(relative, fmt)) for relative in relatives]
    return frozenset(path for path, apart in zip(paths, kept_apart(pairs)) if apart)


def list_photos(filesystem, root: str) -> list[str]:
    """The photos nanolily reads under ``root`` on a pyarrow filesystem, searched recursively, sorted:
    by extension, leaving out hidden files and folders and ``*_lily.*`` outputs, as ``nanolily enhance``
    does with a folder (Ray Data's own listing would also leave out every name starting with ``_``,
    such as a camera's ``_DSC1234.JPG``). ``root`` itself when it is a file."""
    from pyarrow import fs

    from nanolily.interfaces.cli.common import wanted_photo

    if filesystem.get_file_info(root).type == fs.FileType.File:
        return [root]
    base = root.rstrip("/")
    if isinstance(filesystem, fs.LocalFileSystem):  # pyarrow's selector follows symlinked folders, loops too
        files = [path.as_posix() for path in Path(base).glob("**/*") if path.is_file()]
    else:
        files = [info.path for info in filesystem.get_file_info(fs.FileSelector(base, recursive=True))
                 if info.type == fs.FileType.File]
    return sorted(path for path in files if wanted_photo(path[len(base):].lstrip("/")))


def split_uri(uri: str) -> tuple[object, str]:
    """A pyarrow filesystem and the path on it, for a local path or a URI such as ``s3://bucket/key``."""
    from pyarrow import fs

    if "://" not in uri:
        return fs.LocalFileSystem(), str(Path(uri).expanduser().resolve())
    return fs.FileSystem.from_uri(uri)


class Enhancer:
    """A Ray actor: loads the model once, then enhances batches of ``{"bytes", "path"}`` rows, writing
    each output itself; returns one row per file: path, output, status (done / skipped / failed), reason."""

    def __init__(self, model: str | None, root: str, output: str, fmt: str | None, apart: frozenset[str],
                 quality: int, overwrite: bool, skip_existing: bool, threads: int, options: dict):
        import torch

        from nanolily.models.weights import load_model

        torch.set_num_threads(max(1, threads))
        self.model = load_model(model, device="cpu")
        self.root, self.fmt, self.apart, self.quality = root, fmt, apart, quality
        self.overwrite, self.skip_existing, self.options = overwrite, skip_existing, options
        self.fs, self.out_root = split_uri(output)
        self.local = type(self.fs).__name__ == "LocalFileSystem"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [self.one(data, path) for data, path in zip(batch["bytes"], batch["path"])]
        return {key: np.array([row[i] for row in rows], dtype=object)
                for i, key in enumerate(("path", "output", "status", "reason"))}

    def one(self, data: bytes, path: str) -> tuple[str, str, str, str]:
        import io

        from nanolily.engine.pipeline import enhance_photo
        from nanolily.io.images import ImageError, encode_image, read_image, write_image

        target = posixpath.join(self.out_root, output_name(relative_path(path, self.root), self.fmt,
                                                          path in self.apart))
        try:
            exists = self.fs.get_file_info(target).type.name != "NotFound"
            if exists and not self.overwrite:
                if self.skip_existing:
                    return path, target, "skipped", ""
                return path, target, "failed", "the output already exists (overwrite replaces it, skip_existing leaves it)"
            photo = read_image(io.BytesIO(bytes(data)), name=path)
            out = enhance_photo(photo, self.model, reuse_pixels=True, **self.options)
            self.fs.create_dir(posixpath.dirname(target), recursive=True)
            if self.local:  # atomic: a temporary file renamed into place
                write_image(target, out, quality=self.quality, overwrite=True)
            else:  # an object store's put is atomic by itself
                fmt = WRITE_FORMATS[posixpath.splitext(target)[1].lower()]
                with self.fs.open_output_stream(target) as stream:
                    stream.write(encode_image(out, fmt, self.quality))
        except ImageError as e:
            return path, target, "failed", e.reason
        except Exception as e:  # one bad file does not stop the others; its row says why
            return path, target, "failed", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return path, target, "done", ""


def enhance_collection(source: str, output: str, model: str | None = None, *, workers: int | None = None,
                       threads_per_worker: int = 1, files_per_batch: int = 4, fmt: str | None = None, quality: int = 95,
                       overwrite: bool = False, skip_existing: bool = False, address: str | None = None,
                       progress: bool = True, on_failure=None, **options) -> CollectionReport:
    """Enhance every photo under ``source`` (a folder or URI, searched recursively) into ``output``,
    mirroring the folder tree, on a Ray cluster (``address``: ``"auto"`` for a running one, None for a
    local instance on this machine unless one is already connected).

    Args:
        model: a shipped model's name or a weights file every node can read (None: the default model).
        workers: model actors (default: as many as the cluster's CPUs allow at ``threads_per_worker``).
        fmt: output extension (``"png"``, ``"jpg"``, ...); default: the input's, as ``nanolily enhance``.
        on_failure: called with ``(source, reason)`` as each failure arrives.
        options: :func:`nanolily.engine.pipeline.enhance_photo` options (``strength``, ``denoise``, ...).

    Returns a :class:`CollectionReport`.

    Example (a local Ray instance)::

        report = enhance_collection("night/", "bright/", workers=2, denoise=0.5)
        print(report.done, report.failures)
    """
    import ray
    from tqdm.auto import tqdm

    from nanolily.engine.pipeline import check_mode
    from nanolily.models.weights import load_model

    if fmt is not None and "." + fmt.lower() not in WRITE_FORMATS:
        raise ValueError(f"format must be one of {sorted(s[1:] for s in WRITE_FORMATS)}, got {fmt!r}")
    check_mode(load_model(model, device="cpu"), options.get("mode", "global"))  # fail here, not on each worker
    filesystem, root = split_uri(source)
    root = root.rstrip("/") or "/"
    out_filesystem, out_root = split_uri(output)
    if type(filesystem) is type(out_filesystem) and (out_root + "/").startswith(root.rstrip("/") + "/"):
        raise ValueError(f"{output}: the output is inside the source {source}: choose a folder outside it")
    if filesystem.get_file_info(root).type.name == "NotFound":
        raise ValueError(f"{source}: no such file or folder")
    photos = list_photos(filesystem, root)  # listed here, once, so that outputs that would collide keep apart
    if not photos:
        raise ValueError(f"{source}: no images in this folder")
    start = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = context.print_on_execution_start = False  # the driver shows one bar, by file
    for handler in logging.getLogger("ray.data").handlers:  # Ray Data's log stays in its session folder
        if type(handler).__name__ != "SessionFileHandler":
            handler.setLevel(logging.ERROR)
    # reading is I/O: with no CPU reserved it never waits behind the actors, which hold every CPU
    dataset = ray.data.read_binary_files(photos, include_paths=True, filesystem=filesystem, num_cpus=0)
    if workers is None:
        workers = max(1, int(ray.available_resources().get("CPU", 1) // threads_per_worker))
    results = dataset.map_batches(
        Enhancer, batch_size=files_per_batch, compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=threads_per_worker,
        fn_constructor_kwargs=dict(model=model, root=root, output=output, fmt=fmt,
                                   apart=kept_apart_paths(photos, root, fmt), quality=quality,
                                   overwrite=overwrite, skip_existing=skip_existing, threads=threads_per_worker,
                                   options=options))
    report = CollectionReport()
    with tqdm(total=len(photos), unit="img", desc="images", disable=not progress) as bar:
        for row in results.select_columns(["path", "status", "reason"]).iter_rows():
            if row["status"] == "done":
                report.done += 1
            elif row["status"] == "skipped":
                report.skipped += 1
            else:
                report.failures.append((row["path"], row["reason"]))
                if on_failure is not None:
                    on_failure(row["path"], row["reason"])
            bar.update()
    report.seconds = time.perf_counter() - start
    return report


