"""Fuzzed file-name and list readers: Market-1501, DukeMTMC-reID folders, MSMT17 list files.

Market/Duke: files whose names break the naming scheme (bad or non-ASCII ids and cameras,
junk and distractors outside the gallery, undecodable bytes, other extensions) are added to a
real-format fixture. MSMT17: lines with bad labels, labels disagreeing with the name, bad
cameras, absolute or escaping paths, extra fields, CRLF endings, and broken file bytes are
added to the real lists. The outcome must be the records an independent parse of the names
predicts, or a DatasetFormatError naming the file (and for lists the line and the field).
"""

from __future__ import annotations

import dataclasses
import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reid_jax.data.formats.dukemtmc import load_dukemtmc
from reid_jax.data.formats.market1501 import load_market1501
from reid_jax.data.formats.msmt17 import load_msmt17

from . import fuzzing, test_dukemtmc, test_market1501, test_msmt17

SPLITS = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}
IDS = ["0002", "1500", "0000", "-1", "-2", "-01", "12", "abcd", "٠٠٠٢", "9" * 19, "", "\udcff"]


@dataclasses.dataclass(frozen=True, repr=False)
class NameScheme:
    """A folder dataset: its fixture, reader, and name parts with their validity."""

    name: str
    make: object
    load: object
    cameras: dict[str, int | None]  # camera text -> camera number (None: invalid)
    tails: dict[str, bool]  # what follows the camera -> valid
    junk_allowed: bool  # '-1' is a valid id
    gallery_only: frozenset

    def __repr__(self) -> str:
        return f"NameScheme({self.name})"


SCHEMES = [
    NameScheme(
        "market1501",
        test_market1501._make,
        load_market1501,
        {"1": 1, "6": 6, "0": None, "7": None, "٣": None, "x": None, "12": None},
        {"s1_000451_03": True, "s12_0_0": True, "s1_000451": False, "_f0046985": False},
        junk_allowed=True,
        gallery_only=frozenset({-1, 0}),
    ),
    NameScheme(
        "dukemtmc",
        test_dukemtmc._make,
        load_dukemtmc,
        {"1": 1, "8": 8, "01": 1, "0": None, "9": None, "٣": None, "x": None},
        {"_f0046985": True, "_f1": True, "s1_000451_03": False, "_0046985": False},
        junk_allowed=False,
        gallery_only=frozenset({0}),
    ),
]


def _expected_name(scheme: NameScheme, person: str, camera: str, tail: str):
    """(person_id, camera_id0) of a generated name, or None if it breaks the scheme."""
    if person == "-1" and scheme.junk_allowed:
        person_id = -1
    elif re.fullmatch(r"[0-9]{1,18}", person):
        person_id = int(person)
    else:
        return None
    number = scheme.cameras[camera]
    return None if number is None or not scheme.tails[tail] else (person_id, number - 1)


@pytest.fixture(scope="module", params=SCHEMES, ids=lambda s: s.name)
def folder_dataset(request, tmp_path_factory):
    scheme = request.param
    root = scheme.make(tmp_path_factory.mktemp(scheme.name))
    return scheme, str(root)


@fuzzing.FUZZ_SETTINGS
@given(data=st.data())
def test_folder_reader_follows_the_naming_scheme(folder_dataset, data):
    scheme, root = folder_dataset
    parts = st.tuples(
        st.sampled_from(list(SPLITS)),
        st.sampled_from(IDS),
        st.sampled_from(sorted(scheme.cameras)),
        st.sampled_from(sorted(scheme.tails)),
        st.sampled_from([".jpg", ".jpg", ".JPG", ".png", ".jpg.bak"]),
    )
    added = data.draw(st.lists(parts, min_size=1, max_size=3, unique_by=lambda p: p[:2]))
    added = [p for p in added if not os.path.exists(_added_path(root, *p))]  # keep the fixture
    written = []
    try:
        for folder, person, camera, tail, ext in added:
            path = _added_path(root, folder, person, camera, tail, ext)
            with open(os.fsencode(path), "wb") as f:  # fsencode: undecodable names too
                f.write(b"\xff\xd8 truncated jpeg")
            written.append(path)
        outcome = fuzzing.run_reader(scheme.name, lambda: scheme.load(root))
    finally:
        for path in written:
            os.remove(os.fsencode(path))

    expected = []
    for folder, split in SPLITS.items():
        extra = {f"{p}_c{c}{t}{e}": (p, c, t, e) for f, p, c, t, e in added if f == folder}
        for name in sorted(set(os.listdir(os.path.join(root, folder))) | set(extra)):
            path = os.path.join(root, folder, name)
            if name in extra:
                person, camera, tail, ext = extra[name]
                if ext.lower() != ".jpg":
                    continue  # not a JPEG: skipped and logged
                parsed = _expected_name(scheme, person, camera, tail)
            else:
                parsed = _fixture_name(scheme, name)
            if parsed is None:
                fuzzing.check_error(outcome, path=path, record=None, fields={"name"})
                return
            if split != "gallery" and parsed[0] in scheme.gallery_only:
                continue  # junk / distractor outside the gallery: never an identity
            expected.append((path, parsed[0], parsed[1], split))
    assert not isinstance(outcome, Exception), outcome
    assert [(r.image_path, r.person_id, r.camera_id, r.split) for r in outcome] == expected


def _added_path(root, folder, person, camera, tail, ext) -> str:
    return os.path.join(root, folder, f"{person}_c{camera}{tail}{ext}")


def _fixture_name(scheme: NameScheme, name: str) -> tuple[int, int]:
    """(person_id, camera_id0) of a fixture file, parsed as its own test module does."""
    if scheme.name == "market1501":
        return test_market1501._reference_parse(name)
    person, camera = name.split("_")[:2]
    return int(person), int(camera[1:]) - 1


# --- MSMT17 list files -----------------------------------------------------------------------

LIST_SPLITS = {
    "list_train.txt": ("train", "train"),
    "list_val.txt": ("train", "train"),
    "list_query.txt": ("test", "query"),
    "list_gallery.txt": ("test", "gallery"),
}


@pytest.fixture(scope="module")
def msmt_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("msmt17")
    test_msmt17._make(root)
    (root / fuzzing.OUTSIDE_FILE).write_bytes(b"outside")
    texts = {name: (root / name).read_bytes() for name in LIST_SPLITS}
    return str(root), texts


def _line_problem(line: str, image_dir: str) -> tuple[str | None, tuple | None]:
    """Reference parse of one list line: (bad field or None, (path, label, camera) or None)."""
    parts = line.split()
    if not parts:
        return None, None
    if len(parts) != 2:
        return "line", None
    rel_path, label = parts
    if not re.fullmatch(r"[0-9]{1,18}", label):
        return "label", None
    match = re.match(r"([0-9]{1,18})_([0-9]+)_([0-9]+)_", rel_path.rsplit("/", 1)[-1])
    if match is None or not 1 <= int(match.group(3)) <= 15:
        return "path", None
    if int(label) != int(match.group(1)):
        return "label", None
    if not fuzzing.is_safe_existing_path(rel_path, image_dir):
        return "path", None
    return None, (os.path.join(image_dir, rel_path), int(label), int(match.group(3)) - 1)


def _msmt_lines(existing: list[str], image_dir: str) -> st.SearchStrategy[str]:
    names = st.builds(
        "{}/{}_{}_{}_0303morning_0015_0.jpg".format,
        st.sampled_from(["0000", "1040", "7"]),
        st.sampled_from(["0000", "1040", "٠٠٠٠", "x"]),
        st.sampled_from(["000", "011"]),
        st.sampled_from(["01", "15", "00", "16", "١"]),
    )
    paths = names | fuzzing.dangerous_paths(existing, image_dir) | st.sampled_from(existing)
    labels = st.sampled_from(["0", "1040", "7", "²", "-1", "x", "", "0" * 20, "١"])
    return st.builds(
        lambda path, sep, label, extra, end: f"{path}{sep}{label}{extra}{end}",
        paths,
        st.sampled_from([" ", "\t", "  "]),
        labels,
        st.sampled_from(["", "", " extra", "\u2028"]),
        st.sampled_from(["", "\r"]),
    )


@fuzzing.FUZZ_SETTINGS
@given(data=st.data())
def test_msmt17_lists_give_records_or_name_file_line_and_field(msmt_dataset, data):
    root, texts = msmt_dataset
    existing = [
        line.split()[0] for text in texts.values() for line in text.decode().splitlines() if line
    ]
    raws = dict(texts)
    name = data.draw(st.sampled_from(sorted(LIST_SPLITS)), label="list")
    image_dir = os.path.join(root, LIST_SPLITS[name][0])
    lines = raws[name].decode().split("\n")
    for _ in range(data.draw(st.integers(1, 2), label="mutations")):
        at = data.draw(st.integers(0, len(lines)), label="line")
        lines.insert(at, data.draw(_msmt_lines(existing, image_dir), label="text"))
    raws[name] = data.draw(fuzzing.file_bytes("\n".join(lines).encode()), label="file")
    for list_name, raw in raws.items():
        fuzzing.write_bytes(os.path.join(root, list_name), raw)

    outcome = fuzzing.run_reader("msmt17", lambda: load_msmt17(root))
    for list_name, text in texts.items():  # restore the fixture for the next case
        fuzzing.write_bytes(os.path.join(root, list_name), text)

    expected = []
    for list_name, (folder, split) in LIST_SPLITS.items():
        list_path = os.path.join(root, list_name)
        try:
            lines = raws[list_name].decode("utf-8").split("\n")
        except UnicodeDecodeError:
            fuzzing.check_error(outcome, path=list_path, record=None, fields={None})
            return
        for number, line in enumerate(lines, start=1):
            field, record = _line_problem(line, os.path.join(root, folder))
            if field is not None:
                fuzzing.check_error(
                    outcome, path=list_path, record=f"line {number}", fields={field}
                )
                return
            if record is not None:
                expected.append((*record, split))
    assert not isinstance(outcome, Exception), outcome
    assert [(r.image_path, r.person_id, r.camera_id, r.split) for r in outcome] == expected
