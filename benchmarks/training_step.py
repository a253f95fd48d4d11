"""What one training step of a recipe costs, and where the time goes.

    python benchmarks/training_step.py                                   # nanolily-v2's recipe, one thread
    python benchmarks/training_step.py --config configs/cpu.yaml --threads 2

Times the config's model, loss and optimiser on a batch of its shape (``batch_size`` crops of ``size``
pixels; made-up images: the cost does not depend on the content, and no dataset is needed): forward,
loss, backward and optimiser step, medians over ``--steps`` steps after a warm-up, then each loss term's
forward and backward alone. The data pipeline (cropping, augmenting; ~0.08 s a step for nanolily-v2's
recipe) and validation are not included. Prints a markdown table; writes benchmarks/results/training_step.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from nanolily.training.losses import LOSSES, CompositeLoss
from nanolily.training.train import TrainConfig, resolve_vgg
from nanolily.models.weights import build_model

ROOT = Path(__file__).resolve().parents[1]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(config: TrainConfig, steps: int, data: Path) -> dict:
    torch.manual_seed(0)
    model = build_model(config.architecture, config.model).train()
    criterion = CompositeLoss(config.loss, resolve_vgg(config, data, None), config.vgg_convention)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    shape = (config.batch_size, 3, config.size, config.size)
    high = torch.rand(shape)
    low = high * 0.1 + 0.01 * torch.rand(shape)
    phases = {"forward": [], "loss": [], "backward": [], "optimiser": []}
    for step in range(steps + 2):  # two warm-up steps
        out = loss = None

        def forward():
            nonlocal out
            out = model(low)

        def compute_loss():
            nonlocal loss
            loss = criterion(out, high)[0]

        def backward():
            optimizer.zero_grad(set_to_none=True)
            loss.backward()

        def optimiser_step():
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or float("inf"))
            optimizer.step()

        times = [timed(f) for f in (forward, compute_loss, backward, optimiser_step)]
        if step >= 2:
            for name, t in zip(phases, times):
                phases[name].append(t)
    result = {name: statistics.median(ts) for name, ts in phases.items()}
    result["step"] = sum(result.values())
    terms = {}
    for name in config.loss:
        if name == "vgg":
            continue
        x = out.detach().clone().requires_grad_()
        forward_s, backward_s = [], []
        for _ in range(max(3, steps // 2)):
            value = None

            def term():
                nonlocal value
                value = LOSSES[name](x, high)

            forward_s.append(timed(term))
            backward_s.append(timed(value.backward))
        terms[name] = {"forward": statistics.median(forward_s), "backward": statistics.median(backward_s)}
    return {"phases": result, "loss_terms": terms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs/v2-long-cpu.yaml"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s, as the recipe)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default: %(default)s)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared/datasets"), help="for a vgg term's weights")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/training_step.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = TrainConfig.from_yaml(args.config)
    measured = measure(config, args.steps, Path(args.data))
    config_path = Path(args.config).resolve()
    record = {"config": str(config_path.relative_to(ROOT)) if config_path.is_relative_to(ROOT) else args.config,
              "batch": [config.batch_size, 3, config.size, config.size],
              "model": config.architecture, "loss": config.loss, "threads": args.threads, "steps": args.steps,
              "torch": torch.__version__, "machine": platform.processor() or platform.machine(), **measured}
    phases = measured["phases"]
    print(f"{record['config']}: batch {config.batch_size} x {config.size}x{config.size}, {args.threads} thread(s)\n")
    print("| phase | median s |\n|---|---|")
    print("\n".join(f"| {name} | {t:.3f} |" for name, t in phases.items()))
    print("\n| loss term | forward s | backward s |\n|---|---|---|")
    print("\n".join(f"| {name} | {t['forward']:.3f} | {t['backward']:.3f} |" for name, t in measured["loss_terms"].items()))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
