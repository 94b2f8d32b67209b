"""reid-jax search: attribute (full and partial), photo and sentence queries against an index,
scores equal to direct computations, pictures written with escaped names (issue 12)."""

import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from reid_jax import cli
from reid_jax.data.attribute_examples import market_groups
from reid_jax.evaluation.attribute_retrieval import attribute_prediction_scores
from reid_jax.export.run_export import write_task_bundle
from reid_jax.inference import load_bundle
from reid_jax.inference.index import build_index, load_index
from reid_jax.inference.search import search, text_embedding
from reid_jax.text.vocab import Vocabulary
from reid_jax.training.tasks import attribute_joint, ssan
from reid_jax.training.tasks.base import TrainDataInfo

REPO = Path(__file__).resolve().parents[2]
FULL_QUERY = (
    "gender=female hair=long sleeve=short lower_length=long lower_type=pants hat=no "
    "backpack=yes bag=no handbag=no age=adult upper=red lower=black+blue"
)


def _config(name):
    spec = importlib.util.spec_from_file_location(f"{name}_cfg", REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("smoke")


def _images(root: Path, names) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / name)


@pytest.fixture(scope="module")
def attribute_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("attr")
    config = _config("attribute_joint")
    groups = market_groups()
    info = TrainDataInfo(
        num_examples=8,
        steps_per_epoch=1,
        num_classes=2,
        extras={
            "groups": [list(g) for g in groups],
            "softmax_groups": [[9, 13]],
            "sid_attributes": [[0] * 30, [1] * 30],
        },
    )
    model = attribute_joint.create_model(config, info)
    variables = attribute_joint.init_variables(model, jax.random.key(0), config)
    bundle = write_task_bundle(root / "bundle", attribute_joint, model, variables, config, info)
    _images(root / "images", [f"p{i}.jpg" for i in range(6)] + ["<b>evil&.png"])
    build_index(load_bundle(bundle), root / "images", root / "index", progress=False)
    return root


def test_attribute_queries_full_partial_and_bad(attribute_index, capsys):
    root = attribute_index
    index, bundle = load_index(root / "index"), load_bundle(root / "bundle")
    assert index.extras["attribute_logits"].shape == (7, 30)
    full = search(root / "index", attributes=FULL_QUERY, top_k=3)
    assert full.method == "embedding (exact)"
    # 9 fields (female, long hair, short sleeve, long lower, pants, no hat, backpack, no bag,
    # no handbag), age one-hot at 9 + 2 (adult), upper red at 13 + 2, lower black and blue at
    # 21 + 0 and 21 + 6 (Market's colour order).
    vector = np.zeros((1, 30), np.float32)
    vector[0, [0, 1, 2, 4, 6, 11, 15, 21, 27]] = 1
    concept = bundle.encode("encode_attributes", vector)["embedding"][0]
    expected = index.embeddings @ concept
    np.testing.assert_allclose(full.scores, np.sort(expected)[::-1][:3], atol=1e-5)
    partial = search(root / "index", attributes="gender=female upper=red", top_k=7)
    assert partial.method == "attribute heads"
    asked = -np.ones((1, 30), int)
    asked[0, 0] = 1
    asked[0, 13:21] = 0
    asked[0, 15] = 1
    heads = attribute_prediction_scores(index.extras["attribute_logits"], asked, [(9, 13)])[0]
    np.testing.assert_allclose(partial.scores, np.sort(heads)[::-1], rtol=1e-5)
    argv = ["search", "--index", str(root / "index"), "--attributes", "gender=robot"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "gender" in err and "male" in err and "female" in err


def test_photo_search_finds_itself_and_pictures_escape_names(attribute_index, tmp_path, capsys):
    root = attribute_index
    query = root / "images" / "<b>evil&.png"
    argv = ["search", "--index", str(root / "index"), "--image", str(query), "--top-k", "4"]
    assert cli.main(argv + ["--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    first = [line for line in out.splitlines() if line.strip().startswith("1 ")][0]
    assert first.endswith("<b>evil&.png") and float(first.split()[1]) == pytest.approx(
        1.0, abs=1e-4
    )
    page = (tmp_path / "out" / "search.html").read_text()
    assert "&lt;b&gt;evil&amp;.png" in page and "<b>evil" not in page
    assert (tmp_path / "out" / "search.png").stat().st_size > 0


def test_sentence_search_with_an_ssan_bundle(tmp_path):
    config = _config("ssan")
    info = TrainDataInfo(num_examples=8, steps_per_epoch=1, num_classes=4)
    model = ssan.create_model(config, info)
    variables = ssan.init_variables(model, jax.random.key(1), config)
    words = ("a", "woman", "red", "coat", "man", "with", "bag")
    Vocabulary(words).save(tmp_path / "vocab.json")
    bundle = write_task_bundle(
        tmp_path / "bundle", ssan, model, variables, config, info, files=[tmp_path / "vocab.json"]
    )
    _images(tmp_path / "images", [f"g{i}.png" for i in range(5)])
    build_index(load_bundle(bundle), tmp_path / "images", tmp_path / "index", progress=False)
    result = search(tmp_path / "index", text="A woman in a red coat.", top_k=5)
    query = text_embedding(load_bundle(bundle), "A woman in a red coat.")
    expected = load_index(tmp_path / "index").embeddings @ query
    np.testing.assert_allclose(result.scores, np.sort(expected)[::-1], atol=1e-5)
