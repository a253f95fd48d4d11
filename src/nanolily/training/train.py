"""Training: configs, the loop, checkpoints and resume. Plain PyTorch; under ``torchrun`` it runs
data-parallel (DDP) on every GPU without code changes.

    nanolily train --config configs/cpu.yaml --data ../shared/datasets --out runs/cpu
    nanolily train --config configs/cpu.yaml --data ../shared/datasets --out runs/cpu --resume
    torchrun --nproc_per_node 4 -m nanolily.interfaces.cli train --config configs/seed-stage1.yaml --data DATA

Every step's batch and augmentation are drawn from generators seeded by (seed, epoch) and
(seed, step, rank), so a resumed run repeats exactly the steps an uninterrupted run would take.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn as nn

from nanolily.training.data import DatasetSpec, PairedImages, expose_linear, find_overlaps, pairs_from_spec
from nanolily.engine.pipeline import NO_CORRECTIONS, enhance_tensor
from nanolily.training.losses import CompositeLoss
from nanolily.training.metrics import LEVEL_TOLERANCE, REFERENCE_CLIP, mean_grey, newly_clipped, psnr, ssim, to_grey
from nanolily.models.v1 import NanoLILY
from nanolily.models.weights import build_model, feature_weights_path, load_model, save_weights

DEFAULT_VGG = "vgg19-features-relu3_4-caffe.safetensors"


@dataclass
class TrainConfig:
    """Every training setting; a YAML config overrides these defaults and unknown keys are an error."""

    name: str = "nanolily"
    architecture: str = "NanoLILY"  # NanoLILY | NanoLILYv2 (weights.ARCHITECTURES)
    model: dict = field(default_factory=dict)  # overrides of the architecture's config
    train: list = field(default_factory=lambda: [
        {"layout": "lol-v1", "path": "lol-v1", "split": "splits/lol-v1-train.txt"}])
    val: list = field(default_factory=lambda: [
        {"layout": "lol-v1", "path": "lol-v1", "split": "splits/lol-v1-val.txt"}])
    leakage_test: list = field(default_factory=lambda: [
        {"layout": "lol-v2", "path": "lol-v2-real", "subset": "Test"}])  # only compared against, never read for training
    init_from: str | None = None  # weights to fine-tune from (safetensors)
    # schedule
    epochs: int = 200
    max_steps: int | None = None
    max_minutes: float | None = None  # stop at the first validation after this much wall time
    batch_size: int = 32
    # views
    size: int = 224
    crop: str = "resize"  # resize | random | mixed | full
    resize_prob: float = 0.5
    flips: bool = True
    rot90: bool = True
    exposure: list | None = None  # [lo, hi]: scale low images' exposure by a log-uniform factor in linear light
    zoom: list | None = None  # [lo, hi]: random crops of size / z resized to size, z log-uniform in [lo, hi]
    identity: float = 0.0  # share of views whose input is the reference itself: well-lit photos stay as they are
    identity_exposure: list | None = None  # [lo, hi]: identity views re-exposed (input and target): dim photos stay dim
    gray: float = 0.0  # share of views turned grey (input and target): grayscale photos lit as colour ones
    lights: float = 0.0  # share of views with a light source pasted in (input and target): no halo around lamps
    jpeg: float = 0.0  # share of views whose input is saved as a JPEG (the target lossless)
    jpeg_quality: list[int] = field(default_factory=lambda: [60, 95])  # its quality, drawn uniformly
    # weight of an L1 term between the network's output for a grey copy of the first third of each batch
    # and the grey of its output for the colour views (held fixed): a grayscale photo lit as its colour one
    gray_consistency: float = 0.0
    # optimisation
    lr: float = 2e-5
    weight_decay: float = 1e-2
    scheduler: str = "plateau"  # plateau | cosine | constant
    warmup_steps: int = 0
    min_lr: float = 0.0
    plateau_factor: float = 0.5
    plateau_patience: int = 5
    plateau_start_epoch: int = 0
    grad_clip: float | None = 0.5
    ema: float | None = None  # decay of an exponential moving average of the weights, validated and saved
    # loss
    loss: dict = field(default_factory=lambda: {"l1": 1.0, "ssim": 0.2, "vgg": 0.05, "fft": 0.05})
    loss_schedule: dict = field(default_factory=dict)  # term -> [[from_epoch, weight], ...]
    vgg_weights: str = DEFAULT_VGG
    vgg_convention: str | None = None
    vgg_every: int = 1
    # validation and selection
    val_every: int | None = None  # steps; None = once per epoch
    val_mode: str = "bloom"
    val_stride: int = 112
    select: str = "ssim"  # psnr | ssim
    val_exposures: list = field(default_factory=lambda: [1.0])  # validate at each input exposure, select on the mean
    select_no_harm: bool = False  # rank checkpoints that fail the do-no-harm bar on the val references last
    early_stop_patience: int | None = None  # validations without improvement
    early_stop_min_delta: float = 0.0
    # run
    seed: int = 0
    threads: int | None = None
    check_leakage: bool = True
    log_every: int = 10

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; known keys: {sorted(known)}")
        config = cls(**data)
        config.validate()
        return config

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "TrainConfig":
        try:
            import yaml
        except ImportError:
            raise SystemExit("training configs need PyYAML: pip install 'nanolily[train]'") from None
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config is a mapping of keys to values")
        return cls.from_dict(data)

    def validate(self) -> None:
        choices = {"crop": ("resize", "random", "mixed", "full"), "scheduler": ("plateau", "cosine", "constant"),
                   "val_mode": ("bloom", "core", "global"), "select": ("psnr", "ssim")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.ema is not None and not 0 < self.ema < 1:
            raise ValueError(f"ema must be a decay in (0, 1), e.g. 0.998, got {self.ema}")
        if not self.val_exposures or any(not f > 0 for f in self.val_exposures):
            raise ValueError(f"val_exposures must be positive factors, e.g. [0.5, 1, 2], got {self.val_exposures}")
        for key in ("exposure", "zoom", "identity_exposure"):
            bounds = getattr(self, key)
            if bounds is not None and not (len(bounds) == 2 and 0 < bounds[0] <= bounds[1]):
                raise ValueError(f"{key} must be [lo, hi] with 0 < lo <= hi, got {bounds}")
        for key in ("identity", "gray", "lights", "jpeg"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"{key} must be a probability in [0, 1), got {getattr(self, key)}")
        if not (len(self.jpeg_quality) == 2 and 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100):
            raise ValueError(f"jpeg_quality must be [lo, hi] with 1 <= lo <= hi <= 100, got {self.jpeg_quality}")
        if self.gray_consistency < 0:
            raise ValueError(f"gray_consistency must be a weight >= 0, got {self.gray_consistency}")
        if self.zoom is not None and self.crop != "random":
            raise ValueError(f"zoom applies to random crops only, got crop {self.crop!r}")
        build_model(self.architecture, self.model)
        for spec in self.train + self.val + self.leakage_test:
            DatasetSpec(**spec)


def schedule_weights(config: TrainConfig, epoch: int) -> dict[str, float]:
    """Loss weights at ``epoch``: ``config.loss`` updated by the last ``loss_schedule`` entry reached."""
    weights = dict(config.loss)
    for term, steps in config.loss_schedule.items():
        for start, value in sorted(steps):
            if epoch >= start:
                weights[term] = value
    return weights


def lr_lambda(config: TrainConfig, total_steps: int):
    """Per-step LR multiplier: linear warm-up, then cosine to ``min_lr`` (or constant)."""
    def f(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.scheduler != "cosine":
            return 1.0
        t = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
        floor = config.min_lr / config.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return f


@torch.no_grad()
def validate(model: NanoLILY, images: PairedImages, mode: str = "bloom", stride: int = 112,
             exposures: list[float] = (1.0,), no_harm: bool = False) -> dict[str, float]:
    """Mean full-resolution PSNR and SSIM of ``model`` over a paired set (outputs clamped to [0, 1]).

    With several ``exposures``, each low image is also shown re-exposed by each factor in linear light
    (:func:`nanolily.training.data.expose_linear`; the reference unchanged): ``psnr`` and ``ssim`` are then the
    means over all of them, and ``psnr@<factor>`` each factor's own mean.

    ``no_harm``: also enhance each reference (a well-lit photo) with the default corrections, as
    ``nanolily enhance`` does, and report ``ref_outside`` (references whose mean level moved by more than
    :data:`~nanolily.training.metrics.LEVEL_TOLERANCE`), ``ref_clip_max`` (the largest share of newly clipped pixels) and
    ``no_harm`` (1 if neither exceeds the bar of issue #24, else 0); and ``gray_outside``, the low images
    whose grey copy comes out more than that tolerance off the grey of their colour output's level.
    """
    was_training = model.training
    model.eval()
    p = {f: [] for f in exposures}
    s = {f: [] for f in exposures}
    ratios, clipped, grey_ratios = [], [], []
    for i in range(len(images)):
        low, high = images.full(i)
        for f in exposures:
            out = enhance_tensor(expose_linear(low, f)[None] if f != 1 else low[None], model, mode=mode,
                                 stride=stride, precision="fp32", **NO_CORRECTIONS)
            p[f].append(float(psnr(out, high[None])))
            s[f].append(float(ssim(out, high[None])))
            if f == 1:
                colour = out  # the photo as captured: what its grey copy is compared with
        if no_harm:
            if 1 not in exposures:
                colour = enhance_tensor(low[None], model, mode=mode, stride=stride, precision="fp32",
                                        **NO_CORRECTIONS)
            grey = enhance_tensor(to_grey(low[None]), model, mode=mode, stride=stride, precision="fp32",
                                  **NO_CORRECTIONS)
            grey_ratios.append(float(mean_grey(grey) / mean_grey(colour).clamp_min(1e-6)))
            out = enhance_tensor(high[None], model, mode=mode, stride=stride, precision="fp32")
            ratios.append(float(mean_grey(out) / mean_grey(high[None]).clamp_min(1e-6)))
            clipped.append(float(newly_clipped(high[None], out)))
    model.train(was_training)
    mean = statistics.fmean
    metrics = {"psnr": mean(mean(v) for v in p.values()), "ssim": mean(mean(v) for v in s.values())}
    if len(exposures) > 1:
        metrics.update({f"psnr@{f:g}": mean(p[f]) for f in exposures})
    if no_harm:
        outside = sum(abs(r - 1) > LEVEL_TOLERANCE for r in ratios)
        metrics.update(ref_outside=outside, ref_clip_max=max(clipped),
                       no_harm=float(outside == 0 and max(clipped) <= REFERENCE_CLIP))
        metrics["gray_outside"] = sum(abs(r - 1) > LEVEL_TOLERANCE for r in grey_ratios)
    return metrics


def grey_consistency(net: nn.Module, low: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """L1 between ``net``'s output for the grey copy of ``low`` ``(k, 3, H, W)`` and the grey of its
    output ``out`` for ``low`` in colour (the first ``k`` of the batch, no gradient through them)."""
    return (net(to_grey(low)) - to_grey(out[:len(low)].detach())).abs().mean()


def selection_score(metrics: dict[str, float], config: "TrainConfig") -> float:
    """The number checkpoints are ranked by: ``metrics[config.select]``, and with ``select_no_harm``
    one that fails the do-no-harm bar ranks below every one that passes it."""
    score = metrics[config.select]
    return score - 1000 * (1 - metrics["no_harm"]) if config.select_no_harm else score


class Distributed:
    """Rank, world size and device under torchrun (WORLD_SIZE set), else a single process."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        if self.world > 1:
            torch.distributed.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def from_main(self, values: list[float]) -> list[float]:
        """Rank 0's values on every rank (unchanged in a single process)."""
        if self.world == 1:
            return values
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        torch.distributed.broadcast(t, 0)
        return [type(v)(x) for v, x in zip(values, t.tolist())]

    def close(self) -> None:
        if self.world > 1:
            # no rank tears down its connections while another may still use them (one CI run saw a rank
            # abort, SIGABRT, as the two-process test ended; not reproduced since)
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def resolve_vgg(config: TrainConfig, data: Path, weights_dir: str | None) -> Path | None:
    if config.loss.get("vgg", 0) == 0 and all(v == 0 for _, v in config.loss_schedule.get("vgg", [])):
        return None
    return feature_weights_path(config.vgg_weights, weights_dir, data)


def check_leakage(config: TrainConfig, data: Path, train_pairs, force: bool, log) -> None:
    tests = []
    for spec in config.leakage_test:
        try:
            tests += pairs_from_spec(data, DatasetSpec(**spec))
        except ValueError:
            log(f"leakage guard: test set {spec['path']} not found under {data}; skipped")
    if not tests:
        return
    overlaps = find_overlaps(train_pairs, tests)
    if overlaps:
        shown = ", ".join(f"train {a} = test {b} ({k})" for a, b, k in overlaps[:10])
        message = f"{len(overlaps)} training images have the content of test images: {shown}"
        if not force:
            raise SystemExit(f"error: {message}; remove them (see docs/training.md) or pass --force")
        log(f"warning: {message} (--force given)")
    else:
        log(f"leakage guard: no overlap between {len(train_pairs)} training and {len(tests)} test pairs")


def train(config: TrainConfig, data: str | os.PathLike, out: str | os.PathLike, resume: bool = False,
          force: bool = False, weights_dir: str | None = None, progress: bool = True,
          until: int | None = None) -> dict:
    """Run a training config; returns a summary (best validation metrics, steps, wall time).

    ``until`` stops after that step with a checkpoint, to split a long run into pieces (resume
    continues exactly where it stopped).
    """
    from tqdm.auto import tqdm

    dist = Distributed()
    log = (lambda msg: tqdm.write(msg, file=sys.stderr)) if dist.main else (lambda msg: None)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)

    train_pairs = [p for spec in config.train for p in pairs_from_spec(data, DatasetSpec(**spec))]
    val_pairs = [p for spec in config.val for p in pairs_from_spec(data, DatasetSpec(**spec))]
    if config.check_leakage and dist.main:
        check_leakage(config, data, list(dict.fromkeys(train_pairs + val_pairs)), force, log)
    train_set = PairedImages(train_pairs, progress=progress and dist.main)
    val_set = PairedImages(val_pairs, progress=progress and dist.main)
    log(f"data: {len(train_set)} training pairs, {len(val_set)} validation pairs")

    model = load_model(config.init_from, device="cpu") if config.init_from else build_model(config.architecture,
                                                                                              config.model)
    model = model.to(dist.device).train()
    ema = WeightAverage(model, config.ema) if config.ema else None
    evaluated = ema.model if ema else model  # what is validated and saved as best.safetensors
    net: nn.Module = nn.parallel.DistributedDataParallel(model) if dist.world > 1 else model
    criterion = CompositeLoss(config.loss, resolve_vgg(config, data, weights_dir), config.vgg_convention).to(dist.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_set) / (config.batch_size * dist.world)))
    total = config.epochs * steps_per_epoch
    total = min(total, config.max_steps) if config.max_steps else total
    lr_at = lr_lambda(config, total)
    val_every = config.val_every or steps_per_epoch

    # lr_scale / plateau_*: our own ReduceLROnPlateau, so it composes with warm-up and is saved with the run
    state = {"step": 0, "best": -math.inf, "best_metrics": {}, "stale": 0, "elapsed": 0.0, "cpu": 0.0,
             "lr_scale": 1.0, "plateau_best": -math.inf, "plateau_bad": 0}
    last = out / "last.ckpt"
    if resume:
        if not last.exists():
            raise SystemExit(f"error: --resume: no checkpoint at {last}")
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema:
            ema.model.load_state_dict(ckpt["ema"])
        state = ckpt["state"]
        log(f"resumed from {last} at step {state['step']}")

    def save_checkpoint(path: Path) -> None:
        if not dist.main:
            return
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"model": model.state_dict(), "architecture": type(model).__name__,
                    "model_config": model.config_dict(),
                    "optimizer": optimizer.state_dict(), "state": state, "config": asdict(config),
                    **({"ema": ema.model.state_dict()} if ema else {})}, tmp)
        os.replace(tmp, path)

    (out / "config.json").write_text(json.dumps(asdict(config), indent=2))
    resumed_at = state["step"] if resume else None
    train_log = _CsvLog(out / "train_log.csv", resumed_at)
    val_log = _CsvLog(out / "val_log.csv", resumed_at)
    bar = tqdm(total=total, initial=state["step"], unit="step", disable=not (progress and dist.main), desc=config.name)
    start = time.perf_counter() - state["elapsed"]
    cpu_start = time.process_time() - state["cpu"]  # CPU seconds of all threads: honest under contention
    stop_reason = "finished"
    while state["step"] < total:
        step = state["step"]
        epoch = step // steps_per_epoch
        low, high = _batch(train_set, config, step, epoch, steps_per_epoch, dist)
        weights = schedule_weights(config, epoch)
        skip = ("vgg",) if config.vgg_every > 1 and step % config.vgg_every else ()
        low = low.to(dist.device)
        pred = net(low)
        loss, parts = criterion(pred, high.to(dist.device), weights, skip)
        if config.gray_consistency:
            grey_part = grey_consistency(net, low[:max(1, len(low) // 3)], pred)
            parts["gray_consistency"] = float(grey_part.detach())
            loss = loss + config.gray_consistency * grey_part
        for group in optimizer.param_groups:
            group["lr"] = config.lr * lr_at(step) * state["lr_scale"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        if ema:
            ema.update(model, step)
        state["step"] = step = step + 1
        state["elapsed"] = time.perf_counter() - start
        state["cpu"] = time.process_time() - cpu_start
        bar.update(1)
        if dist.main and (step % config.log_every == 0 or step == 1):
            train_log.write({"step": step, "epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
                             "loss": float(loss.detach()), **parts, "elapsed_s": round(state["elapsed"], 1),
                             "cpu_s": round(state["cpu"], 1)})
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        if until is not None and step >= until:
            save_checkpoint(last)
            stop_reason = f"paused at step {step} (--until); continue with --resume"
            break
        if step % val_every == 0 or step == total:  # the same steps on every rank
            timed_out = config.max_minutes is not None and state["elapsed"] > 60 * config.max_minutes
            if dist.main:
                metrics = validate(evaluated, val_set, config.val_mode, config.val_stride, config.val_exposures,
                                   config.select_no_harm)
                score = selection_score(metrics, config)
                improved = score > state["best"] + config.early_stop_min_delta
                if improved:
                    state.update(best=score, best_metrics={**metrics, "step": step, "epoch": epoch},
                                 stale=0)
                    save_weights(evaluated, out / "best.safetensors", version=config.name,
                                 training_data=_describe(config.train),
                                 metrics={"val": _describe(config.val), "val_mode": config.val_mode, **metrics},
                                 extra={"step": step, "train_config": asdict(config)})
                else:
                    state["stale"] += 1
                val_log.write({"step": step, "epoch": epoch, **{f"val_{k}": round(v, 5) for k, v in metrics.items()},
                               "best": improved, "elapsed_s": round(state["elapsed"], 1)})
                log(f"step {step} epoch {epoch}: val psnr {metrics['psnr']:.3f} ssim {metrics['ssim']:.4f}"
                    + (f" references outside +-10 % {metrics['ref_outside']}, max newly clipped "
                       f"{100 * metrics['ref_clip_max']:.2f} %, grey off its colour level "
                       f"{metrics['gray_outside']}" if config.select_no_harm else "")
                    + (" (best)" if improved else ""))
                if config.scheduler == "plateau" and epoch >= config.plateau_start_epoch:
                    _plateau_step(state, score, config)
            # rank 0 validated: every rank takes its LR scale and stop decisions
            state["lr_scale"], state["stale"], timed_out = dist.from_main([state["lr_scale"], state["stale"], timed_out])
            save_checkpoint(last)
            if config.early_stop_patience is not None and state["stale"] >= config.early_stop_patience:
                stop_reason = f"early stop: no improvement in {state['stale']} validations"
                break
            if timed_out:
                stop_reason = f"time limit of {config.max_minutes} min reached"
                break
    bar.close()
    summary = {"name": config.name, "steps": state["step"], "total_steps": total, "stop": stop_reason,
               "wall_time_s": round(state["elapsed"], 1), "cpu_time_s": round(state["cpu"], 1),
               "threads": torch.get_num_threads(), "best": state["best_metrics"],
               "best_weights": str(out / "best.safetensors")}
    if dist.main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        log(f"{stop_reason}; best {config.select} {state['best']:.4f} -> {out / 'best.safetensors'}")
    dist.close()
    return summary


class WeightAverage:
    """An exponential moving average of a model's weights (``ema`` in a config): validated and saved in
    place of the raw weights, it smooths out the step-to-step wander that makes one checkpoint look
    better than its neighbours on a small validation set. The decay warms up as ``(1 + n) / (10 + n)``
    so the early average is not dominated by the initial weights.

    Example:
        >>> model = torch.nn.Linear(2, 1)
        >>> average = WeightAverage(model, 0.9)
        >>> with torch.no_grad():
        ...     _ = model.weight.add_(1.0)
        >>> average.update(model, step=100)
        >>> bool(torch.allclose(average.model.weight, model.weight - 0.9))
        True
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        averaged, current = self.model.state_dict().values(), model.state_dict().values()
        for a, c in zip(averaged, current):
            if a.is_floating_point():
                a.lerp_(c, 1 - decay)
            else:
                a.copy_(c)


def _plateau_step(state: dict, metric: float, config: TrainConfig, threshold: float = 1e-4) -> None:
    """ReduceLROnPlateau (mode max, relative threshold): scale the LR by ``plateau_factor`` after more
    than ``plateau_patience`` validations without improvement."""
    best = state["plateau_best"]
    if best == -math.inf or metric > best + threshold * abs(best):
        state["plateau_best"], state["plateau_bad"] = metric, 0
        return
    state["plateau_bad"] += 1
    if state["plateau_bad"] > config.plateau_patience:
        state["lr_scale"] *= config.plateau_factor
        state["plateau_bad"] = 0


def _batch(images: PairedImages, config: TrainConfig, step: int, epoch: int, steps_per_epoch: int,
           dist: Distributed) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
    per_step = config.batch_size * dist.world
    i = (step % steps_per_epoch) * per_step
    chosen = order.roll(-i)[:per_step][dist.rank::dist.world]  # wraps around when the epoch's last batch is short
    gen = torch.Generator().manual_seed(((config.seed * 1_000_003 + step) * 1009 + dist.rank) % (2 ** 63))
    views = [images.sample(int(k), gen, config.size, config.crop, config.resize_prob, config.flips, config.rot90,
                           tuple(config.exposure) if config.exposure else None,
                           tuple(config.zoom) if config.zoom else None, config.identity,
                           tuple(config.identity_exposure) if config.identity_exposure else None, config.gray,
                           config.lights, config.jpeg, tuple(config.jpeg_quality))
             for k in chosen]
    sizes = {tuple(v[0].shape[-2:]) for v in views}
    if len(sizes) > 1:  # only crop "full" gives views of the images' own sizes
        raise ValueError(f"crop 'full' needs training images of one size, got {sorted(sizes)}: use crop 'random'")
    return torch.stack([v[0] for v in views]), torch.stack([v[1] for v in views])


def _describe(specs: list) -> str:
    return "; ".join(f"{s['layout']}:{s['path']}" + (f"/{s['subset']}" if s.get("subset") else "")
                     + (f" split {s['split']}" if s.get("split") else "")
                     + (f" ids {s['ids']}" if s.get("ids") else "")
                     + (f" x{s['repeat']}" if s.get("repeat", 1) > 1 else "") for s in specs)


class _CsvLog:
    """Append rows to a CSV file; new columns (e.g. a loss term turned on later) extend the header.

    ``resumed_at``: a resumed run keeps the rows up to that step and drops later ones (written by a run
    stopped after its last checkpoint, they are written again).
    """

    def __init__(self, path: Path, resumed_at: int | None):
        self.path = path
        self.rows: list[dict] = []
        if resumed_at is not None and path.exists():
            with open(path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resumed_at]
        elif path.exists():
            path.unlink()

    def write(self, row: dict) -> None:
        self.rows.append(row)
        columns = list(dict.fromkeys(k for r in self.rows for k in r))
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)
