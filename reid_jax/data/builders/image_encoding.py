"""Image bytes for the TFDS builders: the original file when possible, lossless RGB otherwise.

`tfds.features.Image` stores encoded bytes and, without TensorFlow, decodes them with PIL
(`decode_example_np`), which only yields a correct `[H, W, 3]` array for RGB or greyscale
images: a palette PNG would decode to palette indices, RGBA/CMYK to 4 channels. Encoding a
NumPy array through the feature would need TensorFlow (`tf.image.encode_png`). So the builders
hand the feature ready-made bytes:

* RGB JPEG/PNG files are passed through byte for byte (decoding them later gives exactly the
  pixels PIL gives on the original file, as in the references);
* anything else (greyscale, palette, RGBA, CMYK, other formats) is converted to RGB with PIL,
  like the references' `convert('RGB')`, and re-encoded as PNG, which is lossless.

Every image is fully decoded once here, so a truncated or corrupt file fails the build with
an error naming it instead of failing later in training.
"""

from __future__ import annotations

import io

from PIL import Image

from reid_jax.data.errors import DatasetFormatError

_PASS_THROUGH_FORMATS = ("JPEG", "PNG")


def rgb_image_bytes(
    image_path: str, *, source: str, record: int | str, field: str = "image"
) -> bytes:
    """Returns encoded bytes of an image that decode with PIL to an RGB `[H, W, 3]` uint8 array.

    Args:
      image_path: the image file.
      source: the annotation file that names the image (for errors).
      record: index or name of that record in `source`.
      field: field of the record that holds the image path.

    Returns:
      the file's own bytes for RGB JPEG/PNG, else a lossless PNG of `convert('RGB')`.

    Raises:
      DatasetFormatError: the file is missing or cannot be decoded.
    """
    try:
        with open(image_path, "rb") as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # Full decode: catches truncated files now.
            if image.format in _PASS_THROUGH_FORMATS and image.mode == "RGB":
                return data
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="PNG")
            return buffer.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetFormatError(
            source, f"cannot read image {image_path}: {e}", record=record, field=field
        ) from e
