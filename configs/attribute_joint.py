"""Attribute-image joint space (Yin et al., attribute_reid): find people by attribute vectors.

    reid-jax train --config configs/attribute_joint.py --workdir runs/attr              # full
    reid-jax train --config configs/attribute_joint.py:joint --workdir runs/attr_joint  # no D
    reid-jax train --config configs/attribute_joint.py:attribute_prediction ...         # heads
    reid-jax train --config configs/attribute_joint.py:market1501 \
        --config.data.root=/data/Market-1501-v15.09.15 --workdir runs/attr_market
    reid-jax train --config configs/attribute_joint.py:peta,smoke ...                 # 2 steps

Datasets: 'embedded' (default; the synthetic Market-1501 copy with its market_attribute.mat,
a small ResNet, minutes on a CPU), 'market1501' (with market_attribute.mat in the dataset
folder or `data.attribute_file`), 'dukemtmc' (duke_attribute.mat), 'peta' (PETA.mat + images/,
the follow-up code's 200-semantic-ID split). Methods (§3.8): 'adversarial' (default, the full
model), 'joint' (no adversary), 'attribute_prediction' (the heads alone). Real-data settings
are the design of attribute_reid §3.6 [D]: the paper's body was not available, so every
number there is a proposal, not a reproduction.
"""

import ml_collections

from reid_jax import config_lib

DATASETS = ("embedded", "market1501", "dukemtmc", "peta")
METHODS = ("adversarial", "joint", "attribute_prediction")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the config for `arg`: a dataset of DATASETS, a method of METHODS, 'smoke'."""
    words = [w.strip() for w in (arg or "").split(",")]
    methods = [w for w in words if w in METHODS]
    if len(methods) > 1:
        raise ValueError(f"config argument: two methods in '{arg}'")
    args = config_lib.parse_arg(
        ",".join(w for w in words if w not in METHODS), variants=DATASETS, default="embedded"
    )
    paper = args.variant != "embedded"
    config = ml_collections.ConfigDict()
    config.task = "attribute_joint"
    config.method = methods[0] if methods else "adversarial"
    config.seed = 0
    config.init_from = ""
    config.init_from_rules = ()
    config.init_from_strict = False

    config.data = ml_collections.ConfigDict(
        dict(
            dataset=args.variant,
            # Market-1501-v15.09.15 / DukeMTMC-reID / the PETA folder (PETA.mat + images/).
            root=config_lib.required_placeholder(str) if paper else "",
            # market_attribute.mat / duke_attribute.mat; '' = looked up in data.root.
            attribute_file="",
            image_size=(256, 128) if paper else (128, 64),  # (H, W)
            images_per_identity=4,  # K; P = train.batch_size // K
            pad_crop=10 if paper else 4,  # zero-pad and random-crop pixels (§3.6)
            num_workers=0,
            # A training image that cannot be decoded: 'stop' the run naming it, or 'skip' it
            # (another image of the same identity stands in; counted as data/skipped_images).
            bad_images="stop",
            embedded_seed=0,
            embedded_image_size=(128, 64),
            embedded_sizes=ml_collections.ConfigDict(),
        )
    )

    config.model = ml_collections.ConfigDict(
        dict(
            embed_dim=512 if paper else 128,  # d
            reduce_dim=512 if paper else 128,  # channels after the 1x1 reduction
            backbone_depth=50 if paper else 18,
            backbone_width=1.0 if paper else 0.25,
            # ImageNet ResNet state dict (torchvision names) for the image branch's trunk.
            pretrained_trunk="",
            generator_hidden=(512, 1024) if paper else (256, 256),
            discriminator_hidden=(512, 256) if paper else (128, 64),
            dtype="float32",
            # float32 matmuls/convolutions: "default" lets the backend choose (TF32 on NVIDIA
            # Ampere and newer, bfloat16 passes on TPU), "high" (TF32 / 3 bf16 passes), "highest"
            # (full float32). Ignored for bfloat16 operands. Applies to the whole process.
            matmul_precision="default",
        )
    )

    config.loss = ml_collections.ConfigDict(
        dict(
            attribute_weight=1.0,
            sid_weight=1.0,  # L_sid(φ) and L_sid(ψ) (§3.4)
            sid_scale=16.0,  # τ
            ranking_weight=1.0,
            margin=0.2,  # m of the ranking loss (§3.5)
            adversarial_weight=0.1,  # λ_adv (only for the 'adversarial' method)
            random_concepts=32,  # extra training vectors per step as negatives (§3.6)
        )
    )

    stage1 = 30
    epochs = 90
    lr = 3.5e-4 if paper else 1e-3
    concept_lr = 1e-4 if paper else 5e-4
    config.optim = ml_collections.ConfigDict(
        dict(
            name="adam",
            lr=lr,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=5e-4,  # coupled L2 on the image side
            no_decay_groups=("generator", "discriminator"),
            groups=(
                ("backbone", "^image/backbone/"),
                ("generator", "^generator/"),
                ("discriminator", "^discriminator/"),
                ("image", ".*"),  # attention, heads, embedding, W_s
            ),
            lr_multipliers=ml_collections.ConfigDict(
                dict(
                    backbone=0.1 if paper else 1.0,  # 3.5e-5 on ImageNet weights
                    image=1.0,
                    generator=concept_lr / lr,
                    discriminator=concept_lr / lr,
                )
            ),
            # ψ and D join in stage 2 with their own Adam state (D: β1 = 0.5); the image
            # branch continues at a tenth of its lr (§3.6).
            group_options=ml_collections.ConfigDict(
                dict(
                    backbone=dict(epoch_factors=((stage1, 0.1),)),
                    image=dict(epoch_factors=((stage1, 0.1),)),
                    generator=dict(start_epoch=stage1),
                    discriminator=dict(start_epoch=stage1, b1=0.5),
                )
            ),
            schedule="constant",
            decay_epochs=(),
            decay_factor=0.1,
            warmup_steps=0,
            clip_norm=0.0,
        )
    )

    config.train = ml_collections.ConfigDict(
        dict(
            batch_size=64,  # P x K = 16 x 4
            num_epochs=epochs,
            stage1_epochs=stage1,  # image branch alone before the joint stage
            num_steps=0,
            grad_accum_steps=1,
            ema_decay=0.0,
            log_every_steps=50 if paper else 10,
        )
    )
    if config.method == "attribute_prediction":  # the heads alone: one stage, one lr
        config.optim.group_options = ml_collections.ConfigDict()

    config.eval = ml_collections.ConfigDict(
        dict(
            select_metric="prediction/mAP"
            if config.method == "attribute_prediction"
            else "joint/mAP",
            use_ema=False,
            every_epochs=0,
            batch_size=64,
            # Market/Duke: 'standard' (§4.1-4.2), 'with_query' (query/ joins the gallery) or
            # 'followup' (the follow-up code's variant, §4.4; it used 288 x 144 input).
            protocol="standard",
            rank_list_queries=8,
            rank_list_top_k=10,
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
            dict(
                embed_dim=16,
                reduce_dim=16,
                backbone_depth=18,
                backbone_width=0.125,
                generator_hidden=(16,),
                discriminator_hidden=(16,),
            )
        )
        config.train.batch_size = 16  # P x K = 4 x 4
        config.train.stage1_epochs = 0 if config.method != "attribute_prediction" else 1
        config.loss.random_concepts = 4
        for name in ("generator", "discriminator"):
            if name in config.optim.group_options:
                config.optim.group_options[name].start_epoch = 0
        config.eval.batch_size = 32
        config.eval.rank_list_queries = 2
        config.eval.rank_list_top_k = 3
    return config
