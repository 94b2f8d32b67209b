"""AlignedReID (Zhang et al. 2017): image-to-image person re-identification.

    reid-jax train --config configs/alignedreid.py --workdir runs/ar                 # embedded
    reid-jax train --config configs/alignedreid.py:mutual --workdir runs/ar_ml       # 2 models
    reid-jax train --config configs/alignedreid.py:market1501 \
        --config.data.root=/data/Market-1501-v15.09.15 --workdir runs/ar_market
    reid-jax train --config configs/alignedreid.py:dukemtmc,mutual,smoke ...        # 2-step check

Variants: 'embedded' (default; the synthetic dataset's Market-1501-format copy, generated on
first use, and a small ResNet tuned to train and evaluate in minutes on a CPU), 'market1501',
'dukemtmc', 'cuhk03_labeled', 'cuhk03_detected' (767/700 protocol), 'msmt17' (the
re-production's hyperparameters, alignedreid §6.3: ResNet-50, 256 x 128, P x K = 32 x 4, Adam
2e-4 with coupled L2 5e-4, constant for 150 epochs then exponential decay to 1e-3x at epoch 300,
margin 0.3). Add 'mutual' for two mutually trained models (global-distance mutual loss, weight 1,
the README run; alignedreid §5.2) and 'smoke' for a seconds-long run; e.g.
`configs/alignedreid.py:market1501,mutual`.
"""

import ml_collections

from reid_jax import config_lib

DATASETS = ("embedded", "market1501", "dukemtmc", "cuhk03_labeled", "cuhk03_detected", "msmt17")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the AlignedReID config for `arg` (a dataset of DATASETS, + 'mutual', 'smoke')."""
    words = [w.strip() for w in (arg or "").split(",")]
    mutual = "mutual" in words
    args = config_lib.parse_arg(
        ",".join(w for w in words if w != "mutual"), variants=DATASETS, default="embedded"
    )
    paper = args.variant != "embedded"
    config = ml_collections.ConfigDict()
    config.task = "alignedreid"
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
            # Market-1501-v15.09.15 / DukeMTMC-reID / CUHK03 protocol folder / MSMT17_V1 folder.
            # 'embedded': '' means <$REID_JAX_DATA or ~/.cache/reid_jax>/embedded (generated).
            root=config_lib.required_placeholder(str) if paper else "",
            image_size=(256, 128) if paper else (128, 64),  # (H, W), alignedreid §1.1
            images_per_identity=4,  # K; P = train.batch_size // K (alignedreid §1.2)
            crop_prob=0.0,
            crop_ratio=1.0,  # random crop, off in the re-production (§1.1)
            num_workers=0,  # grain worker processes decoding images
            # TFDS data directory of the prepared (ArrayRecord) dataset to read instead of the
            # image files (`reid-jax prepare`); '' = the folder of files. 'embedded': prepared
            # on first use into <tfds_dir>/<embedded name>/.
            tfds_dir="",
            # A training image that cannot be decoded: 'stop' the run naming it, or 'skip' it
            # (another image of the same identity stands in; counted as data/skipped_images).
            bad_images="stop",
            # Generation of the embedded dataset (ignored for real datasets); the defaults are
            # shared with the other methods' embedded configs, so one copy serves them all.
            embedded_seed=0,
            embedded_image_size=(128, 64),
            embedded_sizes=ml_collections.ConfigDict(),
        )
    )

    config.model = ml_collections.ConfigDict(
        dict(
            num_models=2 if mutual else 1,  # M models trained mutually in one step (§5.1)
            local_dim=128 if paper else 64,  # c
            backbone_depth=50 if paper else 18,
            backbone_width=1.0 if paper else 0.25,
            # ImageNet ResNet state dict with torchvision names (.pth, .safetensors, .npz)
            # loaded into the trunk at initialisation; the papers start from ImageNet, so
            # real-data runs warn when this is empty.
            pretrained_trunk="",
            # 2: an (H/32) x (W/32) map, 8 stripes at 256 x 128 (§2); the embedded 128 x 64 input
            # uses stride 1 to keep 8 stripes.
            last_stride=2 if paper else 1,
            global_pool="avg",
            local_pool="avg",  # re-production (§2); 'max' = paper variant
            normalize_features=False,  # off for the reported runs (§3.3); also applied at test
            dtype="float32",  # compute dtype; 'bfloat16' keeps params and losses in float32
            # float32 matmuls/convolutions: "default" lets the backend choose (TF32 on NVIDIA
            # Ampere and newer, bfloat16 passes on TPU), "high" (TF32 / 3 bf16 passes), "highest"
            # (full float32). Ignored for bfloat16 operands. Applies to the whole process.
            matmul_precision="default",
        )
    )

    config.loss = ml_collections.ConfigDict(
        dict(
            global_margin=0.3,  # 0 = soft-margin triplet (§4.2)
            local_margin=0.3,
            # §4.5: README runs are GL (1, 0, 0); the embedded run adds local and ID terms, which
            # matter without ImageNet weights.
            global_weight=1.0,
            local_weight=0.0 if paper else 1.0,
            id_weight=0.0 if paper else 1.0,
            # False: local pairs mined on the global distance (§4.3 default); True: mined on the
            # full local matrix (the score sheet's mode; needed for local_distance_mutual_weight).
            local_own_hard_samples=False,
            # Mutual terms (§5.2; only with model.num_models > 1).
            probability_mutual_weight=0.0,
            global_distance_mutual_weight=1.0,
            local_distance_mutual_weight=0.0,
        )
    )

    config.optim = ml_collections.ConfigDict(
        dict(
            name="adam",
            lr=2e-4 if paper else 1e-3,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=5e-4,
            no_decay_groups=(),  # coupled L2 on every parameter (§6.1)
            groups=(("all", ".*"),),
            lr_multipliers=ml_collections.ConfigDict(dict(all=1.0)),
            # 'exp' (§6.2): constant for the first decay_epochs[0] epochs, then geometric decay
            # reaching decay_factor x base in the last epoch (README: from epoch 151 of 300).
            schedule="exp",
            decay_epochs=(150,) if paper else (20,),
            decay_factor=0.001,
            warmup_steps=0,
            clip_norm=0.0,  # > 0: clip the gradient's global norm
        )
    )

    config.train = ml_collections.ConfigDict(
        dict(
            batch_size=128 if paper else 64,  # P x K = 32 x 4 (embedded 16 x 4)
            num_epochs=300 if paper else 40,
            num_steps=0,  # > 0 overrides num_epochs
            grad_accum_steps=1,  # micro-batches per step (same update for per-example losses)
            ema_decay=0.0,  # > 0: keep a moving average of the params
            log_every_steps=50 if paper else 10,
        )
    )

    config.eval = ml_collections.ConfigDict(
        dict(
            # Metric that picks the best/ checkpoint (higher is better); '' = keep none.
            select_metric="model_0/global/mAP",
            use_ema=False,  # evaluate the moving average (needs train.ema_decay > 0)
            every_epochs=0,  # evaluate only at the end (the re-production tests once)
            batch_size=32 if paper else 64,  # padded to a multiple of the device count
            ap_mode="trapezoid",  # the re-production / official Market code (§7.5); or 'step'
            # Distance kinds (§7.2): 'global', 'local', 'global_local' (plain sum). Local kinds
            # cost Q x G (and G x G when re-ranking) aligned distances.
            distances=("global", "local", "global_local"),
            rerank=True,  # also report k-reciprocal re-ranking of each kind (§8.4)
            rerank_k1=20,
            rerank_k2=6,
            rerank_lambda=0.3,
            local_block=256,  # tile of the chunked aligned-distance matrix
            rank_list_queries=8,
            rank_list_top_k=10,
            save_features=True,  # eval/features.npz of model_0 for `reid-jax evaluate --features`
        )
    )

    config.mesh = ml_collections.ConfigDict(
        dict(axis_names=("data",), axis_sizes=(-1,), distributed=False)
    )

    config.checkpoint = ml_collections.ConfigDict(
        dict(every_steps=2000 if paper else 200, max_to_keep=3, async_save=True)
    )

    if args.smoke:
        config_lib.shrink_for_smoke(config)
        config.data.image_size = (64, 32)
        config.model.update(
            dict(local_dim=16, backbone_depth=18, backbone_width=0.125, last_stride=1)
        )
        config.train.batch_size = 16  # P x K = 4 x 4
        config.eval.batch_size = 32
        config.eval.rank_list_queries = 2
        config.eval.rank_list_top_k = 3
    return config
