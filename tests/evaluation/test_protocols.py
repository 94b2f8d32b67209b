"""Protocol helpers build the arrays the metrics expect from parsed records."""

import numpy as np
import pytest

from reid_jax.data.errors import DatasetFormatError
from reid_jax.data.records import CameraImage, CaptionedImage
from reid_jax.evaluation import protocols


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
