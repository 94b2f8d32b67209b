"""`search --rerank`: APTM's ITM re-scoring of a sentence's candidates and k-reciprocal
re-ranking of a photo's, each equal to the evaluation's own second stage computed directly
(issue 12)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax import cli
from reid_jax.data import aptm_examples, transforms
from reid_jax.evaluation.itm_rerank import assemble_scores
from reid_jax.evaluation.reranking import k_reciprocal_rerank
from reid_jax.export.run_export import write_task_bundle
from reid_jax.inference import BundleError, load_bundle
from reid_jax.inference.index import build_index, load_images, load_index
from reid_jax.inference.search import search
from reid_jax.training.tasks import aptm
from reid_jax.training.tasks.base import TrainDataInfo
from tests.inference.conftest import smoke_config, write_image

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB += "a woman man in red coat with bag black shoes".split()
SENTENCE = "A woman in a red coat"


def _euclidean(a, b):
    return np.sqrt(np.maximum(2 - 2 * a @ b.T, 0))


def test_photo_rerank_is_k_reciprocal_over_the_candidates(tmp_path, alignedreid_bundle, capsys):
    images, folder = tmp_path / "images", tmp_path / "index"
    for i in range(9):
        write_image(images / f"p{i}.png", seed=i % 6)  # three exact duplicates
    build_index(alignedreid_bundle, images, folder, progress=False)
    query = images / "p7.png"  # = p1.png
    result = search(folder, image=query, top_k=5, rerank=True)
    assert result.method == "embedding (exact), top 9 k-reciprocal re-ranked"

    gallery = load_index(folder).embeddings
    q = alignedreid_bundle.encode("encode_image", load_images([query], alignedreid_bundle))
    q = q["embedding"]
    distances = k_reciprocal_rerank(
        _euclidean(q, gallery), _euclidean(q, q), _euclidean(gallery, gallery), k1=20, k2=6
    )[0]
    expected = np.lexsort((np.arange(9), distances))[:5]
    np.testing.assert_array_equal(result.indices, expected)
    np.testing.assert_allclose(result.scores, -distances[expected], atol=1e-5)
    assert {result.paths[0], result.paths[1]} == {str(images / "p1.png"), str(query)}

    # A smaller candidate set re-ranks only the first stage's top rerank_k.
    small = search(folder, image=query, top_k=3, rerank=True, rerank_k=4)
    first = search(folder, image=query, top_k=4)
    assert set(small.indices) <= set(first.indices) and len(small.indices) == 3


@pytest.fixture(scope="module")
def aptm_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("aptm")
    config = smoke_config("aptm")
    (root / "vocab.txt").write_text("".join(f"{token}\n" for token in VOCAB))
    info = TrainDataInfo(
        num_examples=8, steps_per_epoch=1, num_classes=4, extras={"vocab_size": len(VOCAB)}
    )
    model = aptm.create_model(config, info)
    variables = aptm.init_variables(model, jax.random.key(4), config)
    path = write_task_bundle(
        root / "bundle", aptm, model, variables, config, info, files=[root / "vocab.txt"]
    )
    for i in range(6):
        write_image(root / "images" / f"g{i}.jpg", seed=10 + i)
    build_index(load_bundle(path), root / "images", root / "index", progress=False)
    return root, config, model, variables


def test_aptm_sentence_search_and_itm_rerank(aptm_index, capsys):
    root, config, model, variables = aptm_index
    bundle, index = load_bundle(root / "bundle"), load_index(root / "index")
    length = config.data.max_tokens
    # [CLS] a woman in a red coat [SEP], written out by hand from VOCAB.
    ids = np.zeros((1, length), np.int32)
    ids[0, :8] = [2, 5, 6, 8, 5, 9, 10, 3]
    mask = (ids > 0).astype(np.int32)
    text = model.apply(variables, ids, mask, train=False, method=model.encode_text)
    cosine = index.embeddings @ np.asarray(text["text_feats"][0])

    plain = search(root / "index", text=SENTENCE, top_k=6)
    np.testing.assert_allclose(plain.scores, np.sort(cosine)[::-1], atol=1e-5)

    reranked = search(root / "index", text=SENTENCE, top_k=4, rerank=True)
    assert config.eval.k_test >= 6  # so every image is re-scored
    assert reranked.method == "embedding (exact), top 6 re-scored by ITM"
    mean, std = aptm_examples.NORMALISATION[config.data.test_normalisation]
    pixels = load_images([root / "images" / f"g{i}.jpg" for i in range(6)], bundle)
    x = jnp.asarray(np.stack([transforms.normalize(p, mean, std) for p in pixels]))
    tokens = model.apply(variables, x, train=False, method=model.encode_image)["image_tokens"]
    pairs = model.apply(
        variables,
        tokens,
        jnp.repeat(text["text_tokens"], 6, axis=0),
        np.repeat(mask, 6, axis=0),
        train=False,
        method=model.match,
    )
    itm = np.asarray(pairs["itm_logits"][:, 1])
    fused = assemble_scores(cosine[None], np.arange(6)[None], itm[None], reference_gpus=1)[0]
    expected = np.argsort(-fused, kind="stable")[:4]
    np.testing.assert_array_equal(reranked.indices, expected)
    np.testing.assert_allclose(reranked.scores, itm[expected], atol=1e-5)

    argv = ["search", "--index", str(root / "index"), "--text", SENTENCE, "--rerank"]
    assert cli.main(argv + ["--top-k", "2", "--out", str(root / "out")]) == 0
    assert "re-scored by ITM" in capsys.readouterr().out


def test_queries_without_a_second_stage_say_so(aptm_index, alignedreid_bundle, tmp_path):
    root = aptm_index[0]
    with pytest.raises(BundleError, match="attribute queries have no second stage"):
        search(root / "index", attributes="gender=female", rerank=True)
    write_image(tmp_path / "images" / "a.png", seed=0)
    build_index(alignedreid_bundle, tmp_path / "images", tmp_path / "index", progress=False)
    with pytest.raises(BundleError, match="cannot encode text"):
        search(tmp_path / "index", text=SENTENCE, rerank=True)
