"""`python -m reid_jax.data.synthetic --out DIR [--seed 0] [--image_size 128x64] [--set k=v]`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from reid_jax.data.synthetic.config import SyntheticConfig
from reid_jax.data.synthetic.generate import generate_dataset, read_marker


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--image_size: expected HxW, got {text!r}") from e
    return h, w


def _override(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    fields = {f.name: f for f in dataclasses.fields(SyntheticConfig)}
    if key not in fields or not value:
        raise argparse.ArgumentTypeError(
            f"--set: expected FIELD=VALUE with FIELD in {sorted(fields)}, got {text!r}"
        )
    parsed = tuple(int(v) for v in value.split(",")) if "," in value else int(value)
    return key, parsed


def main(argv: list[str] | None = None) -> int:
    """Parses arguments, generates the dataset, prints its statistics."""
    parser = argparse.ArgumentParser(prog="python -m reid_jax.data.synthetic", description=__doc__)
    parser.add_argument("--out", required=True, help="dataset root to create")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image_size", type=_size, default=(128, 64), help="HxW, e.g. 384x128")
    parser.add_argument(
        "--set",
        type=_override,
        action="append",
        default=[],
        help="override a SyntheticConfig size, e.g. --set cuhk_train_ids=50 or "
        "--set cuhk_images_per_id=2,3",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    try:
        config = SyntheticConfig(seed=args.seed, image_size=args.image_size, **dict(args.set))
        start = time.perf_counter()
        paths = generate_dataset(args.out, config, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    stats = read_marker(paths["root"])["stats"]
    print(json.dumps({"root": str(paths["root"]), "seconds": round(seconds, 1), **stats}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
