// The search page's script (reid_jax/inference/search_page.py renders the page).
// Every value from the server reaches the DOM through textContent, setAttribute or an
// element property, never through innerHTML: a file name like "<img onerror=...>" stays text.
"use strict";

(function () {
  const byId = (id) => document.getElementById(id);
  let searches = 0; // finished searches (results or error): tests wait on data-searches
  let photoUrl = null; // object URL of the last uploaded photo, shown beside the status

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function topK() {
    const value = parseInt(byId("top-k").value, 10);
    return Number.isFinite(value) ? value : 10;
  }

  function finish() {
    searches += 1;
    document.body.setAttribute("data-searches", String(searches));
    document.body.removeAttribute("aria-busy");
  }

  function showError(message) {
    const box = byId("error");
    box.textContent = message;
    box.hidden = false;
    byId("status").textContent = "";
    byId("results").replaceChildren();
  }

  function card(result) {
    const figure = element("figure", "card");
    figure.setAttribute("data-rank", String(result.rank));
    const image = element("img");
    image.setAttribute("src", result.image_url);
    image.setAttribute("alt", result.name);
    image.setAttribute("title", result.path);
    const caption = element("figcaption");
    caption.append(
      element("span", "rank", "#" + result.rank),
      element("span", "score", result.score === null ? "n/a" : result.score.toFixed(4)),
      element("span", "name", result.name),
    );
    figure.append(image, caption);
    return figure;
  }

  function showResults(data, milliseconds) {
    byId("error").hidden = true;
    const status = byId("status");
    status.textContent =
      `top ${data.results.length} for \u201c${data.query}\u201d ` +
      `(${data.kind}, scored by ${data.method}) in ${milliseconds} ms`;
    if (data.kind === "image" && photoUrl) {
      const photo = element("img");
      photo.id = "query-photo";
      photo.setAttribute("src", photoUrl);
      photo.setAttribute("alt", data.query);
      status.append(photo);
    }
    byId("results").replaceChildren(...data.results.map(card));
  }

  async function search(body) {
    document.body.setAttribute("aria-busy", "true");
    const started = performance.now();
    try {
      const response = await fetch("/api/search", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      let data;
      try {
        data = await response.json();
      } catch (error) {
        throw new Error(`the server answered HTTP ${response.status} without JSON`);
      }
      if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
      showResults(data, Math.round(performance.now() - started));
    } catch (error) {
      showError(error.message);
    } finally {
      finish();
    }
  }

  function onSubmit(id, makeBody) {
    const form = byId(id);
    if (!form) return;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      makeBody();
    });
  }

  // Attribute fields write the query language into the attributes box (editable by hand).
  function attributeQuery(form) {
    const terms = [];
    for (const select of form.querySelectorAll("select[data-field]")) {
      if (select.value) terms.push(`${select.getAttribute("data-field")}=${select.value}`);
    }
    for (const group of form.querySelectorAll("fieldset[data-field]")) {
      const ticked = [...group.querySelectorAll("input:checked")].map((box) => box.value);
      if (ticked.length) terms.push(`${group.getAttribute("data-field")}=${ticked.join("+")}`);
    }
    return terms.join(" ");
  }


  document.addEventListener("DOMContentLoaded", () => {
    onSubmit("text-form", () => search({ text: byId("text-query").value, top_k: topK() }));
    onSubmit("attributes-form", () =>
      search({ attributes: byId("attributes-query").value, top_k: topK() }),
    );
    const attributes = byId("attributes-form");
    if (attributes) {
      attributes.addEventListener("change", (event) => {
        if (event.target.id !== "attributes-query") {
          byId("attributes-query").value = attributeQuery(attributes);
        }
      });
    }
    onSubmit("image-form", () => {
      const file = byId("image-query").files[0];
      if (!file) {
        showError("choose a photo first");
        finish();
        return;
      }
      if (photoUrl) URL.revokeObjectURL(photoUrl);
      photoUrl = URL.createObjectURL(file);
      const reader = new FileReader();
      reader.onload = () =>
        search({ image: reader.result, image_name: file.name, top_k: topK() });
      reader.onerror = () => {
        showError(`${file.name}: cannot read the file`);
        finish();
      };
      reader.readAsDataURL(file);
    });
    document.body.setAttribute("data-ready", "true");
  });
})();
