"""Copy a training run's best weights into the package as a shipped model and print its sha256.

    python scripts/ship_weights.py runs/cpu --name nanolily-v1

Re-saves the weights with ``version`` set to the shipped name and the run's summary in the metadata;
then put the printed sha256 into ``SHIPPED`` in src/nanolily/models/weights.py.
"""

import argparse
import json
from pathlib import Path

from nanolily.models.weights import ASSETS, file_sha256, load_model, read_metadata, save_weights


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="training run folder with best.safetensors and summary.json")
    p.add_argument("--name", default="nanolily-v1")
    args = p.parse_args()
    run = Path(args.run)
    source = run / "best.safetensors"
    meta = read_metadata(source)
    summary = json.loads((run / "summary.json").read_text())
    metrics = {"validation": json.loads(meta["metrics"]),
               "training": {k: summary[k] for k in ("steps", "wall_time_s", "cpu_time_s", "threads") if k in summary}}
    target = save_weights(load_model(source, device="cpu"), ASSETS / f"{args.name}.safetensors", version=args.name,
                          training_data=meta["training_data"], metrics=metrics,
                          extra={"train_config": meta["train_config"], "step": meta.get("step", "")})
    print(f"{target}: {target.stat().st_size} bytes, sha256 {file_sha256(target)}")


if __name__ == "__main__":
    main()
