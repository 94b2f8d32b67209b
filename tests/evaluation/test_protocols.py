"""Protocol helpers build the arrays the metrics expect from parsed records."""

import numpy as np
import pytest

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.records import CameraImage, CaptionedImage
from reid_jax.evaluation import protocols, retrieval


def test_text_protocol_flattens_captions_in_order():
    images = [
        CaptionedImage("/d/a.jpg", 7, ("a1", "a2"), None, "test"),
        CaptionedImage("/d/b.jpg", 3, ("b1",), None, "test"),
        CaptionedImage("/d/c.jpg", 7, ("c1", "c2", "c3"), None, "test"),
    ]
    p = protocols.text_protocol(images)
    assert p.query_texts == ("a1", "a2", "b1", "c1", "c2", "c3")
    np.testing.assert_array_equal(p.query_ids, [7, 7, 3, 7, 7, 7])
    np.testing.assert_array_equal(p.gallery_ids, [7, 3, 7])
    np.testing.assert_array_equal(p.query_source, [0, 0, 1, 2, 2, 2])
    assert p.gallery_paths == ("/d/a.jpg", "/d/b.jpg", "/d/c.jpg") and p.query_cams is None
    first = protocols.text_protocol(images, first_caption_only=True)
    assert first.query_texts == ("a1", "b1", "c1")
    with pytest.raises(DatasetFormatError, match="record 0.*captions"):
        protocols.text_protocol([CaptionedImage("/d/x.jpg", 1, (), None, "test")])


def test_camera_protocol_drops_junk_keeps_distractors():
    query = [CameraImage("/q/1.jpg", 1, 0, "query"), CameraImage("/q/2.jpg", 2, 3, "query")]
    gallery = [
        CameraImage("/g/a.jpg", -1, 0, "gallery"),
        CameraImage("/g/b.jpg", 0, 1, "gallery"),
        CameraImage("/g/c.jpg", 1, 2, "gallery"),
    ]
    p = protocols.camera_protocol(query, gallery)
    np.testing.assert_array_equal(p.gallery_ids, [0, 1])
    np.testing.assert_array_equal(p.gallery_cams, [1, 2])
    np.testing.assert_array_equal(p.gallery_source, [1, 2])
    np.testing.assert_array_equal(p.query_cams, [0, 3])
    assert p.query_paths == ("/q/1.jpg", "/q/2.jpg") and p.gallery_paths == ("/g/b.jpg", "/g/c.jpg")
    assert len(protocols.camera_protocol(query, gallery, drop_junk_gallery=False).gallery_ids) == 3
    with pytest.raises(DatasetFormatError, match="camera_id"):
        protocols.camera_protocol([CameraImage("/q/x.jpg", 1, -1, "query")], gallery)


def test_attribute_protocol_exact_vector_match():
    attrs = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 1, 0]])
    queries, p = protocols.attribute_protocol(attrs)
    np.testing.assert_array_equal(queries, [[0, 0, 1], [0, 1, 0], [1, 0, 1]])
    for g, qid in enumerate(p.gallery_ids):
        np.testing.assert_array_equal(queries[qid], attrs[g])
    np.testing.assert_array_equal(p.query_ids, [0, 1, 2])


def test_peta_followup_split_by_hand():
    # Semantic IDs by first appearance: A=[1,0] (images 0, 3, 5), B=[0,1] (1), C=[1,1] (2, 6),
    # D=[0,0] (4, 7). B has one image and is dropped: kept = A, C, D (first-appearance order).
    a, b, c, d = [1, 0], [0, 1], [1, 1], [0, 0]
    labels = np.array([a, b, c, a, d, a, c, d])
    split = protocols.peta_followup_split(labels, num_test=1, seed=1)
    # The follow-up code: np.random.seed(1); np.random.choice(3, 2, replace=False).
    np.random.seed(1)
    training = set(np.random.choice(3, 2, replace=False).tolist())
    kept = {0: (0, [0, 3, 5]), 1: (2, [2, 6]), 2: (3, [4, 7])}  # kept index -> (sem id, images)
    (held,) = set(kept) - training
    held_sem, held_images = kept[held]
    train_images = sorted(i for k in training for i in kept[k][1])
    np.testing.assert_array_equal(split.train_images, train_images)
    assert 1 not in split.train_images and 1 not in split.protocol.gallery_source  # dropped
    p = split.protocol
    np.testing.assert_array_equal(p.gallery_source, held_images)
    np.testing.assert_array_equal(p.gallery_ids, [held_sem + 1] * len(held_images))
    np.testing.assert_array_equal(p.query_ids, [held_sem + 1])
    np.testing.assert_array_equal(p.query_source, held_images[:1])
    np.testing.assert_array_equal(split.query_attributes, labels[held_images[:1]])
    # Camera = image index: the junk rule removes the query's own image, nothing else.
    junk = retrieval.market_junk_mask(p.query_ids, p.gallery_ids, p.query_cams, p.gallery_cams)
    np.testing.assert_array_equal(junk, [[True] + [False] * (len(held_images) - 1)])


def test_peta_followup_split_needs_enough_semantic_ids():
    with pytest.raises(ValueError, match="fewer than num_test=2"):
        protocols.peta_followup_split(np.array([[1, 0], [1, 0], [0, 1]]), num_test=2)


def test_attribute_followup_junk_needs_same_identity_and_camera():
    """Vector A: ids 7 and 9 (representative 7, query image in camera 2); an id-7 gallery
    image in camera 2 is junk, id 9 in camera 2 and id 7 in camera 1 stay relevant."""
    from reid_jax.evaluation.protocols import attribute_followup_protocol

    records = np.array([[0, 1], [0, 1], [0, 1], [0, 1], [1, 1]])
    person = [7, 7, 9, 7, 3]
    cams = [2, 2, 2, 1, 5]
    query_folder = [True, False, False, False, True]
    queries, protocol = attribute_followup_protocol(records, person, cams, query_folder)
    assert queries.tolist() == [[0, 1], [1, 1]]
    relevant = protocol.query_ids[:, None] == protocol.gallery_ids[None]
    junk = relevant & (protocol.query_cams[:, None] == protocol.gallery_cams[None])
    assert junk.tolist() == [[True, True, False, False, False], [False] * 4 + [True]]
    assert (relevant & ~junk).sum(1).tolist() == [2, 0]
