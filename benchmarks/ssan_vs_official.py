"""The full-size SSAN train step beside the official PyTorch implementation's, in one run.

The PyTorch side runs the official code itself (zifyloo/SSAN, `src/`: `TextImgPersonReidNet`,
`Id_Loss`, `CRLoss`, Adam with the two learning-rate groups), imported from a checkout the
user points at with `--official_src` (the code is not part of this project). Its one change:
`torchvision.models.resnet50(pretrained=True)` would download ImageNet weights, so the trunk
starts from torchvision's random init (timing does not depend on the values). One official
step = the body of its training loop: forward of the network and of the partner captions,
the three ID losses and the three CR losses, `zero_grad`, `backward`, `step`.

The JAX side is the step the training loop runs (`benchmarks.ssan_train_step`: the task's
objective, paper optimizer, `configs/ssan.py:cuhk_pedes` sizes), compiled once.

Both get the same batch: B images 384 x 128, labels in C = 11000, captions and partner
captions of T = 100 ids with lengths drawn from `--lengths` (`full`: every caption 100 long;
`cuhk`: CUHK-PEDES-like lengths, see `caption_lengths`). The official LSTM runs on packed
sequences, so its cost follows the lengths; it re-draws its semi-hard negatives with NumPy.
Timing: rounds alternate PyTorch and JAX steps so both see the same machine load; each side's
figure is the median over its timed steps after one warm-up step per side. Both use every
core (torch's intra-op threads = os.cpu_count(), XLA:CPU's own thread pool).

Usage (from the repository root; needs the `convert` extra's torch and torchvision):
  python -m benchmarks.ssan_vs_official --official_src ~/src/SSAN/src --batch_size=8 --rounds=3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

import jax
import numpy as np

from benchmarks import ssan_train_step, step_timing
from reid_jax.training import xla_options
from reid_jax.training.tasks import ssan

NUM_CLASSES = 11000


def caption_lengths(kind: str, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """[B] int caption lengths in 1..100.

    'full': all 100 (the padded length, the JAX step's cost whatever the lengths).
    'cuhk': around CUHK-PEDES's captions (about 23 words on average in the dataset paper):
    a normal draw with mean 23 and deviation 8, clipped to 8..100.
    """
    if kind == "full":
        return np.full(batch_size, 100, np.int64)
    return np.clip(np.round(rng.normal(23, 8, batch_size)), 8, 100).astype(np.int64)


def make_batch(batch_size: int, lengths: str, seed: int = 0) -> dict[str, np.ndarray]:
    """One batch in NumPy: normalised NHWC images, labels, captions and partners."""
    rng = np.random.default_rng(seed)
    batch = {
        "image": rng.uniform(-1, 1, (batch_size, 384, 128, 3)).astype(np.float32),
        # distinct labels: the CR loss always finds negatives
        "label": rng.choice(NUM_CLASSES, batch_size, replace=False).astype(np.int32),
    }
    for prefix in ("", "partner_"):
        length = caption_lengths(lengths, batch_size, rng)
        ids = rng.integers(1, 5000, (batch_size, 100)).astype(np.int32)
        ids[np.arange(100)[None, :] >= length[:, None]] = 0
        batch[f"{prefix}caption"] = ids
        batch[f"{prefix}length"] = length.astype(np.int32)
    return batch


def official_step(official_src: str, batch: dict[str, np.ndarray]):
    """Builds the official network, losses and optimizer; returns a no-argument step function."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests import torch_compat

    torchvision = torch_compat.import_torchvision()
    import torch

    original_resnet50 = torchvision.models.resnet50
    torchvision.models.resnet50 = lambda pretrained=False, **kw: original_resnet50(**kw)
    sys.path.insert(0, os.path.expanduser(official_src))
    from loss.Id_loss import Id_Loss
    from loss.RankingLoss import CRLoss
    from model.model import TextImgPersonReidNet

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    batch_size = len(batch["label"])
    opt = types.SimpleNamespace(
        part=6,
        feature_length=1024,
        class_num=NUM_CLASSES,
        vocab_size=5000,
        caption_length_max=100,
        margin=0.2,
        cr_beta=0.1,
        batch_size=batch_size,
        lr=0.001,
        adam_alpha=0.9,
        adam_beta=0.999,
        epoch_begin=5,
        device=torch.device("cpu"),
    )
    id_global = Id_Loss(opt, 1, opt.feature_length)
    id_local = Id_Loss(opt, opt.part, opt.feature_length)
    id_non_local = Id_Loss(opt, opt.part, 512)
    cr_loss = CRLoss(opt)
    network = TextImgPersonReidNet(opt)
    network.train()
    cnn = {id(p) for p in network.ImageExtract.parameters()}
    others = [p for p in network.parameters() if id(p) not in cnn]
    for loss in (id_global, id_local, id_non_local):
        others += list(loss.parameters())
    optimizer = torch.optim.Adam(
        [
            {"params": others, "lr": opt.lr},
            {"params": list(network.ImageExtract.parameters()), "lr": opt.lr * 0.1},
        ],
        betas=(opt.adam_alpha, opt.adam_beta),
    )
    image = torch.from_numpy(batch["image"].transpose(0, 3, 1, 2).copy())
    label = torch.from_numpy(batch["label"].astype(np.int64))
    caption = torch.from_numpy(batch["caption"].astype(np.int64))
    length = torch.from_numpy(batch["length"].astype(np.int64))
    partner = torch.from_numpy(batch["partner_caption"].astype(np.int64))
    partner_length = torch.from_numpy(batch["partner_length"].astype(np.int64))
    epoch_past_begin = True  # the auto margin on, as in most of training

    def step() -> float:
        img_g, img_l, img_n, txt_g, txt_l, txt_n = network(image, caption, length)
        txt_g_cr, txt_l_cr, txt_n_cr = network.txt_embedding(partner, partner_length)
        id_loss = id_global(img_g, txt_g, label) + 0.5 * (
            id_local(img_l, txt_l, label) + id_non_local(img_n, txt_n, label)
        )
        ranking = cr_loss(img_g, txt_g, txt_g_cr, label, epoch_past_begin) + 0.5 * (
            cr_loss(img_l, txt_l, txt_l_cr, label, epoch_past_begin)
            + cr_loss(img_n, txt_n, txt_n_cr, label, epoch_past_begin)
        )
        optimizer.zero_grad()
        total = id_loss + ranking
        total.backward()
        optimizer.step()
        return total.item()

    params = sum(p.numel() for p in network.parameters()) + sum(
        p.numel() for loss in (id_global, id_local, id_non_local) for p in loss.parameters()
    )
    return step, params


def jax_step(batch: dict[str, np.ndarray], remat: str | None):
    """Compiles the loop's SSAN step at the batch's size; returns (step function, info, params)."""
    config = ssan_train_step.load_config("cuhk_pedes", batch_size=len(batch["label"]), remat=remat)
    prepared = ssan_train_step.compile_step(
        config, NUM_CLASSES, batch, compiler_options=xla_options.train_step_options(ssan, config)
    )
    holder = {"state": prepared.state}

    def run() -> None:
        holder["state"], _ = prepared.compiled(holder["state"], prepared.batch, prepared.key)
        jax.block_until_ready(holder["state"])

    info = {"remat": config.model.remat, "compile_seconds": round(prepared.compile_seconds, 1)}
    return run, info, prepared.num_params


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official_src", required=True, help="the official SSAN repo's src/")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="timed steps per side")
    parser.add_argument("--lengths", choices=("cuhk", "full"), default="cuhk")
    parser.add_argument("--remat", default=None, help="model.remat (default: the config's)")
    parser.add_argument("--out", default="", help="also write the result JSON here")
    args = parser.parse_args()

    batch = make_batch(args.batch_size, args.lengths)
    torch_run, torch_params = official_step(args.official_src, batch)
    jax_run, jax_info, jax_params = jax_step(batch, args.remat)
    step_timing.progress(
        f"official {torch_params / 1e6:.1f} M parameters, JAX {jax_params / 1e6:.1f} M; "
        f"JAX compiled in {jax_info['compile_seconds']} s"
    )
    warm = {"official": timed(torch_run), "jax": timed(jax_run)}
    times = {"official": [], "jax": []}
    for index in range(args.rounds):
        times["official"].append(timed(torch_run))
        times["jax"].append(timed(jax_run))
        step_timing.progress(
            f"round {index + 1}: official {times['official'][-1]:.2f} s, "
            f"JAX {times['jax'][-1]:.2f} s"
        )
    medians = {side: statistics.median(values) for side, values in times.items()}
    result = {
        "device": step_timing.device_description(),
        "batch": args.batch_size,
        "lengths": args.lengths,
        "caption_lengths": batch["length"].tolist(),
        "jax": jax_info,
        "warm_up_seconds": {k: round(v, 2) for k, v in warm.items()},
        "step_seconds": {k: [round(v, 2) for v in vs] for k, vs in times.items()},
        "median_seconds": {k: round(v, 3) for k, v in medians.items()},
        "speedup": round(medians["official"] / medians["jax"], 2),
        "load_average": os.getloadavg()[0],
    }
    text = json.dumps(result)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
