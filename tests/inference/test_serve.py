"""reid-jax serve: the JSON API over HTTP (text, attribute and photo queries, errors, gallery
images by row only), the page escaping what it shows, and the page in a real headless
Chromium: a typed query shows the same results as `search()`, and a hostile file name stays
text (issue 12, part 4).

The browser tests need Debian's `chromium` and `chromium-driver` packages (CI installs them,
see .ci/run); without them they fail and say how to install them.
"""

import base64
import contextlib
import http.client
import importlib.util
import json
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from reid_jax import cli
from reid_jax.data.attribute_examples import market_groups
from reid_jax.export.run_export import write_task_bundle
from reid_jax.inference import load_bundle
from reid_jax.inference.index import build_index
from reid_jax.inference.search import Searcher, search
from reid_jax.inference.serve import SearchServer
from reid_jax.text.vocab import Vocabulary
from reid_jax.training.tasks import attribute_joint, ssan
from reid_jax.training.tasks.base import TrainDataInfo

REPO = Path(__file__).resolve().parents[2]
HOSTILE = "<img src=x onerror=alert(1)>.png"
QUOTED = "a&b \"double\" 'single' <script>alert(2)<\\script>.png"
ROOT_NAME = 'gallery <b>&"root"'
INSTALL = "apt-get install -y chromium chromium-driver (Debian/Ubuntu; .ci/run does this)"
PROXY_VARIABLES = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
)
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1, never a proxy


def _config(name):
    spec = importlib.util.spec_from_file_location(f"{name}_cfg", REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("smoke")


def _random_variables(task, model, config, seed):
    """Variables of the model's shapes (fan-in scaled normals, identity BatchNorm): the page
    needs a working bundle, not trained or initialised weights, and `model.init` compiles for
    10-30 s on the 2-core CPU where `jax.eval_shape` takes well under a second."""
    shapes = jax.eval_shape(lambda key: task.init_variables(model, key, config), jax.random.key(0))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name in ("scale", "var"):
            return np.ones(leaf.shape, leaf.dtype)
        if name in ("bias", "mean"):
            return np.zeros(leaf.shape, leaf.dtype)
        fan_in = max(1, int(np.prod(leaf.shape[:-1])))
        return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _images(root: Path, names) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / name, format="PNG")


@contextlib.contextmanager
def _serving(searcher):
    server = SearchServer(searcher, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def ssan_index(tmp_path_factory):
    """An SSAN bundle (text + photo) over 6 images, two with hostile names, in a folder whose
    name needs escaping too."""
    root = tmp_path_factory.mktemp("ssan")
    config = _config("ssan")
    info = TrainDataInfo(num_examples=8, steps_per_epoch=1, num_classes=4)
    model = ssan.create_model(config, info)
    Vocabulary(("a", "woman", "red", "coat", "man", "with", "bag")).save(root / "vocab.json")
    bundle = write_task_bundle(
        root / "bundle",
        ssan,
        model,
        _random_variables(ssan, model, config, seed=1),
        config,
        info,
        files=[root / "vocab.json"],
    )
    _images(root / ROOT_NAME, [f"g{i}.png" for i in range(4)] + [HOSTILE, QUOTED])
    build_index(load_bundle(bundle), root / ROOT_NAME, root / "index", progress=False)
    return root / "index"


@pytest.fixture(scope="module")
def attribute_index(tmp_path_factory):
    """An attribute joint-space bundle (attributes + photo, Market fields) over 5 images."""
    root = tmp_path_factory.mktemp("attr")
    config = _config("attribute_joint")
    info = TrainDataInfo(
        num_examples=8,
        steps_per_epoch=1,
        num_classes=2,
        extras={
            "groups": [list(g) for g in market_groups()],
            "softmax_groups": [[9, 13]],
            "sid_attributes": [[0] * 30, [1] * 30],
        },
    )
    model = attribute_joint.create_model(config, info)
    variables = _random_variables(attribute_joint, model, config, seed=2)
    bundle = write_task_bundle(root / "bundle", attribute_joint, model, variables, config, info)
    _images(root / "images", [f"p{i}.png" for i in range(5)])
    build_index(load_bundle(bundle), root / "images", root / "index", progress=False)
    return root / "index"


@pytest.fixture(scope="module")
def ssan_server(ssan_index):
    with _serving(Searcher.open(ssan_index)) as server:
        yield server


@pytest.fixture(scope="module")
def attribute_server(attribute_index):
    with _serving(Searcher.open(attribute_index)) as server:
        yield server


def _get(server, path, headers=None):
    """(status, headers, body) of a GET; the path is sent as written (no normalising)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, response.headers, body


def _post(server, payload, content_type="application/json"):
    """(status, decoded JSON) of a POST /api/search with `payload` (a dict, or raw bytes)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(
        server.url + "api/search", data=body, headers={"Content-Type": content_type}
    )
    try:
        with DIRECT.open(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_text_query_returns_what_search_returns(ssan_server, ssan_index):
    status, answer = _post(ssan_server, {"text": "a woman in a red coat", "top_k": 4})
    assert status == 200
    expected = search(ssan_index, text="a woman in a red coat", top_k=4)
    assert (answer["query"], answer["kind"], answer["method"]) == (
        "a woman in a red coat",
        "text",
        "embedding (exact)",
    )
    results = answer["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4]
    assert [r["row"] for r in results] == expected.indices.tolist()
    assert [r["path"] for r in results] == list(expected.paths)
    assert [r["name"] for r in results] == [Path(p).name for p in expected.paths]
    assert [r["image_url"] for r in results] == [f"/image/{i}" for i in expected.indices]
    np.testing.assert_allclose([r["score"] for r in results], expected.scores, rtol=1e-6)


def test_attribute_query_and_its_errors(attribute_server, attribute_index):
    query = "gender=female upper=red+blue backpack=yes"
    status, answer = _post(attribute_server, {"attributes": query, "top_k": 5})
    assert status == 200
    expected = search(attribute_index, attributes=query, top_k=5)
    assert answer["method"] == expected.method == "attribute heads"
    assert [r["row"] for r in answer["results"]] == expected.indices.tolist()
    np.testing.assert_allclose([r["score"] for r in answer["results"]], expected.scores, rtol=1e-6)
    status, answer = _post(attribute_server, {"attributes": "gender=robot"})
    assert status == 400
    assert "'robot'" in answer["error"] and "male, female" in answer["error"]
    status, answer = _post(attribute_server, {"text": "a woman"})
    assert status == 400 and "cannot take 'text' queries" in answer["error"]


def test_photo_query_finds_the_photo_itself(ssan_server, ssan_index):
    index = Searcher.open(ssan_index).index
    row = index.paths.index(str(ssan_index.parent / ROOT_NAME / "g2.png"))
    data = base64.b64encode(Path(index.paths[row]).read_bytes()).decode()
    for image in (data, "data:image/png;base64," + data):
        status, answer = _post(ssan_server, {"image": image, "image_name": "q.png", "top_k": 2})
        assert status == 200 and answer["query"] == "q.png" and answer["kind"] == "image"
        assert answer["results"][0]["row"] == row
        assert answer["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    # With the second stage: the k-reciprocal order of search(..., rerank=True).
    status, answer = _post(ssan_server, {"image": data, "top_k": 3, "rerank": True})
    expected = search(ssan_index, image=index.paths[row], top_k=3, rerank=True)
    assert status == 200 and "k-reciprocal" in answer["method"] == expected.method
    assert [r["row"] for r in answer["results"]] == expected.indices.tolist()


@pytest.mark.parametrize(
    "payload, content_type, status, words",
    [
        (b"{not json", "application/json", 400, "not JSON"),
        ({"text": "a", "attributes": "gender=male"}, "application/json", 400, "exactly one"),
        ({"txt": "a woman"}, "application/json", 400, "'txt'"),
        ({"text": "   "}, "application/json", 400, "non-empty"),
        ({"text": "a woman", "top_k": 0}, "application/json", 400, "'top_k'"),
        ({"text": "a woman", "top_k": "5"}, "application/json", 400, "'top_k'"),
        ({"text": "a woman", "rerank": "yes"}, "application/json", 400, "'rerank'"),
        ({"text": "a woman", "rerank": True}, "application/json", 400, "no second stage"),
        ({"image": "%%%", "image_name": "x.jpg"}, "application/json", 400, "x.jpg"),
        ({"image": "bm90IGFuIGltYWdl"}, "application/json", 400, "cannot decode"),
        ({"text": "a woman"}, "text/plain", 415, "application/json"),
    ],
)
def test_bad_requests_get_a_json_error(ssan_server, payload, content_type, status, words):
    got, answer = _post(ssan_server, payload, content_type)
    assert got == status and words in answer["error"]


def test_gallery_images_by_row_only(ssan_server, ssan_index):
    paths = Searcher.open(ssan_index).index.paths
    status, headers, body = _get(ssan_server, "/image/1")
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert body == Path(paths[1]).read_bytes()
    secret = ssan_index.parent / "vocab.json"  # a file next to the gallery, not in the index
    for path in (
        f"/image/{len(paths)}",
        "/image/-1",
        "/image/../../../../etc/passwd",
        "/image/..%2f..%2fvocab.json",
        f"/image/{secret}",
        f"/image/1/../../{secret.name}",
        "/etc/passwd",
    ):
        status, headers, body = _get(ssan_server, path)
        assert status == 404, path
        assert headers["Content-Type"].startswith("application/json")
        assert b"woman" not in body
    status, _, body = _get(ssan_server, "/", headers={"Host": "attacker.example:80"})
    assert status == 403 and b"attacker.example" in body


def test_page_shows_the_bundles_query_kinds_escaped(ssan_server, attribute_server):
    status, headers, page = _get(ssan_server, "/")
    page = page.decode()
    assert status == 200 and "script-src 'self'" in headers["Content-Security-Policy"]
    assert 'id="text-query"' in page and 'id="image-query"' in page
    assert 'id="attributes-form"' not in page
    assert "gallery &lt;b&gt;&amp;&quot;root&quot;" in page and "<b>" not in page
    _, _, page = _get(attribute_server, "/")
    page = page.decode()
    assert 'id="attributes-form"' in page and 'id="text-query"' not in page
    assert '<select data-field="gender"><option value="">any</option>' in page
    assert 'data-field="upper"' in page and 'value="red"' in page
    status, headers, script = _get(ssan_server, "/search.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert b"innerHTML" not in script.replace(b"never through innerHTML", b"")
    _, _, info = _get(attribute_server, "/api/info")
    info = json.loads(info)
    assert info["query_kinds"] == ["attributes", "image"] and info["count"] == 5
    gender = next(f for f in info["attribute_fields"] if f["name"] == "gender")
    assert gender == {"name": "gender", "values": ["male", "female"], "multiple": False}


def test_cli_serves_until_ctrl_c_and_reports_a_busy_port(ssan_index, ssan_server, capsys):
    def interrupted(self, poll_interval=0.5):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SearchServer, "serve_forever", interrupted)
        assert cli.main(["serve", "--index", str(ssan_index), "--port", "0"]) == 0
    out = capsys.readouterr().out
    assert "searching 6 images" in out and "(text, image queries)" in out
    assert "http://127.0.0.1:" in out and out.rstrip().endswith("stopped")
    busy = ["serve", "--index", str(ssan_index), "--port", str(ssan_server.port)]
    assert cli.main(busy) == 2
    assert f"cannot listen on 127.0.0.1:{ssan_server.port}" in capsys.readouterr().err


# --- a real browser ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by Selenium through the system chromedriver (never Selenium
    Manager, which would try to download one), connecting directly even where a proxy is set."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail(f"the browser tests need chromium and chromedriver on PATH: {INSTALL}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the browser tests need selenium: pip install -e '.[test]'")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1200,900")
    options.add_argument("--no-proxy-server")
    with pytest.MonkeyPatch.context() as patch:  # selenium reads the proxy variables once, here
        for name in PROXY_VARIABLES:
            patch.delenv(name, raising=False)
        patch.setenv("SE_OFFLINE", "true")
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _submit_and_wait(driver, form_id, searches):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.CSS_SELECTOR, f"#{form_id} button[type=submit]").click()
    WebDriverWait(driver, 120).until(
        lambda d: (
            d.find_element(By.TAG_NAME, "body").get_attribute("data-searches") == str(searches)
        )
    )


def _cards(driver):
    from selenium.webdriver.common.by import By

    return [
        {key: card.find_element(By.CLASS_NAME, key).text for key in ("rank", "score", "name")}
        for card in driver.find_elements(By.CSS_SELECTOR, "#results figure.card")
    ]


def test_browser_text_query_shows_the_search_results(browser, ssan_server, ssan_index):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(ssan_server.url)
    box = browser.find_element(By.ID, "text-query")
    box.send_keys("a man with a bag")
    top_k = browser.find_element(By.ID, "top-k")
    top_k.clear()
    top_k.send_keys("5")
    _submit_and_wait(browser, "text-form", searches=1)
    expected = search(ssan_index, text="a man with a bag", top_k=5)
    cards = _cards(browser)
    assert len(cards) == 5
    assert [c["rank"] for c in cards] == ["#1", "#2", "#3", "#4", "#5"]
    assert [c["name"] for c in cards] == [Path(p).name for p in expected.paths]
    assert [c["score"] for c in cards] == [f"{s:.4f}" for s in expected.scores]
    status = browser.find_element(By.ID, "status").text
    assert "a man with a bag" in status and "scored by embedding" in status
    assert not browser.find_element(By.ID, "error").is_displayed()
    widths = "return [...document.querySelectorAll('#results img')].map(i => i.naturalWidth)"
    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script("return [...document.images].every(i => i.complete)")
    )
    assert browser.execute_script(widths) == [20] * 5  # each image came through /image/<row>


def test_browser_shows_hostile_file_names_as_text(browser, ssan_server, ssan_index):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    browser.get(ssan_server.url)
    photo = ssan_index.parent / ROOT_NAME / HOSTILE
    browser.find_element(By.ID, "image-query").send_keys(str(photo))
    _submit_and_wait(browser, "image-form", searches=1)
    cards = _cards(browser)
    assert cards[0]["name"] == HOSTILE  # the photo finds itself; its name shown verbatim
    assert QUOTED in [c["name"] for c in cards]
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 (the property raises when no alert is open)
    injected = browser.execute_script(
        "return document.querySelectorAll('img[src=\"x\"], #results script, #status script').length"
    )
    assert injected == 0
    assert HOSTILE in browser.find_element(By.ID, "status").text


def test_browser_shows_a_bad_attribute_query_as_an_error(browser, attribute_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(attribute_server.url)
    Select(browser.find_element(By.CSS_SELECTOR, "select[data-field=gender]")).select_by_value(
        "female"
    )
    browser.find_element(By.CSS_SELECTOR, "fieldset[data-field=upper] input[value=red]").click()
    box = browser.find_element(By.ID, "attributes-query")
    assert box.get_attribute("value") == "gender=female upper=red"  # the fields write the query
    _submit_and_wait(browser, "attributes-form", searches=1)
    assert len(_cards(browser)) == 5
    box.send_keys(" hat=maybe")
    _submit_and_wait(browser, "attributes-form", searches=2)
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed() and "'maybe'" in error.text and "no, yes" in error.text
    assert _cards(browser) == []


def _png_header_only(width, height):
    """A PNG that declares width x height pixels and holds none (a decompression bomb's
    header: PIL sees the size on open, before any pixel is decoded)."""
    import struct
    import zlib

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_loopback_by_default_and_size_limits(ssan_server, ssan_index):
    """Issue 14, item 6: the server listens on 127.0.0.1 unless told otherwise, and refuses a
    body over MAX_BODY_BYTES (unread) and a photo of absurd pixel size (undecoded)."""
    from reid_jax.inference import serve

    server = SearchServer(Searcher.open(ssan_index), port=0)  # no host given
    try:
        assert server.server_address[0] == "127.0.0.1" and server.url.startswith("http://127.")
    finally:
        server.server_close()
    parsed = cli._build_parser().parse_args(["serve", "--index", str(ssan_index)])
    assert parsed.host == "127.0.0.1"

    connection = http.client.HTTPConnection("127.0.0.1", ssan_server.port, timeout=60)
    connection.putrequest("POST", "/api/search")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(serve.MAX_BODY_BYTES + 1))
    connection.endheaders(b'{"text": "a woman"')  # the rest never comes: it is not read
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    assert response.status == 413 and f"over {serve.MAX_BODY_BYTES} bytes" in answer["error"]

    bomb = base64.b64encode(_png_header_only(40_000, 40_000)).decode()
    status, answer = _post(ssan_server, {"image": bomb, "image_name": "huge.png"})
    assert status == 400 and "huge.png" in answer["error"]
    assert "exceeds limit" in answer["error"]  # PIL's decompression-bomb guard, not a crash
    status, answer = _post(ssan_server, {"text": "a woman"})
    assert status == 200  # the server is still serving
