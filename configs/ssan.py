"""SSAN (Ding et al. 2021): text -> image person retrieval.

    reid-jax train --config configs/ssan.py --workdir runs/ssan                  # embedded data
    reid-jax train --config configs/ssan.py:cuhk_pedes \
        --config.data.root=/data/CUHK-PEDES --workdir runs/ssan_cuhk              # the paper
    reid-jax train --config configs/ssan.py:icfg_pedes,smoke ...                 # 2-step check

Variants: 'embedded' (default; the synthetic dataset generated on first use, a small model
tuned to train and evaluate in minutes on a CPU), 'cuhk_pedes' and 'icfg_pedes' (the paper's
hyperparameters, ssan §4: ResNet-50, 384 x 128, batch 64, 60 epochs, Adam 1e-3 with the trunk
at 1e-4, x0.1 after epochs 20 and 40). Add 'smoke' to any of them for a seconds-long run.

The embedded variant keeps the method (losses, weights, sharing, evaluation) and shrinks the
scale: ResNet-18 at width 0.25 from scratch (no ImageNet trunk, so it trains at the full lr),
128 x 64 images (4 x 2 feature map, K = 4 stripes), D = 128, lr 3e-3 for 8 epochs with x0.1
after epoch 6, adaptive CR margin from epoch 2. Measured in benchmarks/RESULTS.md
("SSAN train step"): 3 to 7 minutes on 2 shared CPU cores, summed-score R@1 66% (chance 1%).
"""

import ml_collections

from reid_jax import config_lib

# Embedding-table size per dataset (ssan §1.3.4); the embedded vocabulary is far smaller.
VOCAB_SIZE = {"embedded": 500, "cuhk_pedes": 5000, "icfg_pedes": 2500}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the SSAN config for `arg` ('embedded' | 'cuhk_pedes' | 'icfg_pedes', + 'smoke')."""
    args = config_lib.parse_arg(
        arg, variants=("embedded", "cuhk_pedes", "icfg_pedes"), default="embedded"
    )
    paper = args.variant != "embedded"
    config = ml_collections.ConfigDict()
    config.task = "ssan"
    config.seed = 0
    # Start from other weights: a run folder, a checkpoint step folder or a converted .npz
    # (reid-jax import-weights). Names map through ordered (regex, replacement) rules; what
    # matches in shape loads, the rest keeps its fresh initialisation (printed report).
    config.init_from = ""
    config.init_from_rules = ()
    config.init_from_strict = False  # True: anything not loaded is an error

    config.data = ml_collections.ConfigDict(
        dict(
            dataset=args.variant,
            # Folder with reid_raw.json / ICFG-PEDES.json and imgs/. 'embedded': '' means
            # <$REID_JAX_DATA or ~/.cache/reid_jax>/embedded, generated on first use.
            root=config_lib.required_placeholder(str) if paper else "",
            image_size=(384, 128) if paper else (128, 64),  # (H, W)
            max_length=100 if paper else 48,  # T (ssan §1.4); embedded captions have <= 48 words
            min_word_count=2,  # vocabulary threshold (ssan §1.3.2)
            num_workers=0,  # grain worker processes decoding images
            # TFDS data directory of the prepared (ArrayRecord) dataset to read instead of the
            # image files (`reid-jax prepare`); '' = the folder of files. 'embedded': prepared
            # on first use into <tfds_dir>/<embedded name>/.
            tfds_dir="",
            # A training image that cannot be decoded: 'stop' the run naming it, or 'skip' it
            # (another image of the same identity stands in; counted as data/skipped_images).
            bad_images="stop",
            # Generation of the embedded dataset (ignored for real datasets).
            embedded_seed=0,
            embedded_image_size=(128, 64),
            embedded_sizes=ml_collections.ConfigDict(),
        )
    )

    config.model = ml_collections.ConfigDict(
        dict(
            vocab_size=VOCAB_SIZE[args.variant],
            embed_dim=512 if paper else 128,
            lstm_hidden=2048 if paper else 128,  # = backbone output channels (shared heads)
            feature_dim=1024 if paper else 128,  # D
            num_parts=6 if paper else 4,  # K stripes of the feature map (12 rows / 4 rows)
            relation_dim=512 if paper else 64,  # D / 2
            backbone_depth=50 if paper else 18,
            backbone_width=1.0 if paper else 0.25,
            # ImageNet ResNet state dict with torchvision names (.pth, .safetensors, .npz)
            # loaded into the trunk at initialisation; the papers start from ImageNet, so
            # real-data runs warn when this is empty.
            pretrained_trunk="",
            last_stride=2,
            dropout_rate=0.3,
            leaky_slope=0.25,
            dtype="float32",  # compute dtype; 'bfloat16' keeps params and losses in float32
            # float32 matmuls/convolutions: "default" lets the backend choose (TF32 on NVIDIA
            # Ampere and newer, bfloat16 passes on TPU), "high" (TF32 / 3 bf16 passes), "highest"
            # (full float32). Ignored for bfloat16 operands. Applies to the whole process.
            matmul_precision="default",
            # Recompute activations in the backward pass: 'none' | 'backbone' (ResNet blocks)
            # | 'all' (+ BiLSTM steps and WAM). Paper sizes at batch 64 need it on a 24 GB
            # machine; see benchmarks/RESULTS.md "SSAN train step" for memory and speed.
            remat="all" if paper else "none",
        )
    )

    config.loss = ml_collections.ConfigDict(
        dict(
            global_weight=1.0,
            part_weight=0.5,
            relation_weight=0.5,  # ssan §3.5
            alpha=0.2,
            beta=0.1,  # CR margin and weak-term weight (ssan §3.4)
            epoch_begin=5 if paper else 2,  # adaptive margin from this epoch index
            gate_threshold=0.16,
        )
    )

    config.optim = ml_collections.ConfigDict(
        dict(
            name="adam",
            lr=1e-3 if paper else 3e-3,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=0.0,
            no_decay_groups=(),
            groups=(("backbone", "^backbone/"), ("heads", ".*")),
            lr_multipliers=ml_collections.ConfigDict(
                dict(backbone=0.1 if paper else 1.0, heads=1.0)
            ),
            schedule="step",
            decay_epochs=(20, 40) if paper else (6,),
            decay_factor=0.1,
            warmup_steps=0,
            clip_norm=0.0,  # > 0: clip the gradient's global norm
        )
    )

    config.train = ml_collections.ConfigDict(
        dict(
            batch_size=64,
            num_epochs=60 if paper else 8,
            num_steps=0,  # > 0 overrides num_epochs
            grad_accum_steps=1,  # micro-batches per step (same update for per-example losses)
            ema_decay=0.0,  # > 0: keep a moving average of the params
            log_every_steps=50 if paper else 10,
        )
    )

    config.eval = ml_collections.ConfigDict(
        dict(
            # Metric that picks the best/ checkpoint (higher is better); '' = keep none.
            select_metric="sum/R1",
            use_ema=False,  # evaluate the moving average (needs train.ema_decay > 0)
            every_epochs=1 if paper else 0,  # ssan §4 evaluates on test after every epoch
            batch_size=64,
            ap_mode="step",  # standard AP; 'trapezoid' is the reference's variant (ssan §5.3)
            rank_list_queries=8,
            rank_list_top_k=10,
            save_features=True,
            max_gallery_images=0,  # > 0: evaluate on the first N test images only (smoke)
        )
    )

    # One 'data' axis over all devices; distributed=True runs jax.distributed.initialize()
    # first (multi-host; REID_JAX_DISTRIBUTED=1 does the same).
    config.mesh = ml_collections.ConfigDict(
        dict(axis_names=("data",), axis_sizes=(-1,), distributed=False)
    )

    config.checkpoint = ml_collections.ConfigDict(
        dict(every_steps=1000 if paper else 200, max_to_keep=3, async_save=True)
    )

    if args.smoke:
        config_lib.shrink_for_smoke(config)
        config.data.image_size = (64, 32)
        config.data.max_length = 16
        config.data.embedded_image_size = (64, 32)
        config.data.embedded_sizes = ml_collections.ConfigDict(
            dict(
                cuhk_train_ids=8,
                cuhk_val_ids=0,
                cuhk_test_ids=4,
                market_train_ids=1,
                market_test_ids=1,
                market_distractors=0,
                market_junk=0,
                mals_pairs=0,
            )
        )
        config.model.update(
            dict(
                embed_dim=16,
                lstm_hidden=64,
                feature_dim=32,
                num_parts=2,
                relation_dim=16,
                backbone_depth=18,
                backbone_width=0.125,
            )
        )
        config.train.batch_size = 8
        config.eval.batch_size = 16
        config.eval.max_gallery_images = 32
        config.eval.rank_list_queries = 2
        config.eval.rank_list_top_k = 3
    return config
