/* cnnviz report explorer: inlined into report.html by cnnviz.render.report.
 * Vanilla JS, no network. Reads the JSON in <script id="cnnviz-data"> (written by Python):
 *   images: names for the image picker; layers: names for the layer picker;
 *   maps: id -> values readable under the cursor of <img data-map="id">.
 * Elements with data-image="i" / data-layer="name" are shown only while that image / layer
 * is picked; tab sets (data-tabs="group") switch their panels, in step across a group.
 * <html data-cnnviz-images> becomes "loaded" once every picture decoded, or "broken:N". */
(function () {
  "use strict";
  var root = document.documentElement;
  var data = { images: [], layers: [], maps: {} };
  var node = document.getElementById("cnnviz-data");
  if (node) { data = JSON.parse(node.textContent); }

  function all(selector, scope) {
    return Array.prototype.slice.call((scope || document).querySelectorAll(selector));
  }

  /* ---------------------------------------------------------------- image load marker */
  (function () {
    var images = all("img");
    var pending = images.length;
    function finish() {
      var broken = images.filter(function (img) { return !(img.naturalWidth > 0); }).length;
      root.dataset.cnnvizImages = broken ? "broken:" + broken : "loaded";
    }
    function settle() { pending -= 1; if (pending === 0) { finish(); } }
    if (pending === 0) { finish(); return; }
    images.forEach(function (img) {
      if (img.complete) { settle(); return; }
      img.addEventListener("load", settle);
      img.addEventListener("error", settle);
    });
  })();

  /* ------------------------------------------------------------------------ pickers */
  function choose(kind, value) {
    root.setAttribute("data-picked-" + kind, value);
    all("[data-" + kind + "]").forEach(function (element) {
      element.hidden = element.getAttribute("data-" + kind) !== value;
    });
  }

  function addPicker(kind, label, names, values) {
    if (!names.length || !document.querySelector("[data-" + kind + "]")) { return; }
    var box = document.getElementById("cnnviz-pickers");
    var wrap = document.createElement("label");
    wrap.textContent = label;
    var select = document.createElement("select");
    select.id = "cnnviz-" + kind + "-picker";
    names.forEach(function (name, index) {
      var option = document.createElement("option");
      option.value = values[index];
      option.textContent = name;
      select.appendChild(option);
    });
    select.addEventListener("change", function () { choose(kind, select.value); });
    wrap.appendChild(select);
    box.appendChild(wrap);
    choose(kind, select.value);
  }

  addPicker("image", "Image", data.images, data.images.map(function (_, i) { return String(i); }));
  addPicker("layer", "Layer", data.layers, data.layers);

  /* --------------------------------------------------------------------------- tabs */
  function selectTab(group, key) {
    all('[data-tabs="' + group + '"]').forEach(function (set) {
      all('[role="tab"]', set).forEach(function (tab) {
        tab.setAttribute("aria-selected", tab.dataset.tab === key ? "true" : "false");
      });
      all('[role="tabpanel"]', set).forEach(function (panel) {
        panel.hidden = !(key === "all" || panel.dataset.tab === key);
      });
    });
  }

  all("[data-tabs]").forEach(function (set) {
    all('[role="tab"]', set).forEach(function (tab) {
      tab.addEventListener("click", function () { selectTab(set.dataset.tabs, tab.dataset.tab); });
    });
  });
  var groups = {};
  all("[data-tabs]").forEach(function (set) {
    var first = set.querySelector('[role="tab"]');
    if (first && !groups[set.dataset.tabs]) {
      groups[set.dataset.tabs] = true;
      selectTab(set.dataset.tabs, first.dataset.tab);
    }
  });

  /* -------------------------------------------------------------------------- hover */
  var decoded = {};
  function values(id) {
    if (!decoded[id]) {
      var text = atob(data.maps[id].q);
      var bytes = new Uint8Array(text.length);
      for (var i = 0; i < text.length; i += 1) { bytes[i] = text.charCodeAt(i); }
      decoded[id] = bytes;
    }
    return decoded[id];
  }

  function format(value) {
    var size = Math.abs(value);
    if (value === 0) { return "0"; }
    if (size >= 1e4 || size < 1e-3) { return value.toExponential(3); }
    return String(Number(value.toPrecision(4)));
  }

  /* What lies under the cursor of a picture: null on padding between tiles. */
  function lookup(img, event) {
    var spec = data.maps[img.dataset.map];
    if (!spec) { return null; }
    var box = img.getBoundingClientRect();
    var px = (event.clientX - box.left) / box.width * spec.pw;
    var py = (event.clientY - box.top) / box.height * spec.ph;
    var col = Math.floor((px - spec.pad) / (spec.tw + spec.pad));
    var row = Math.floor((py - spec.pad) / (spec.th + spec.pad));
    var tx = px - spec.pad - col * (spec.tw + spec.pad);
    var ty = py - spec.pad - row * (spec.th + spec.pad);
    var tile = row * spec.columns + col;
    if (col < 0 || row < 0 || col >= spec.columns || tx >= spec.tw || ty >= spec.th ||
        tile >= spec.n) { return null; }
    var x = Math.min(spec.w - 1, Math.floor(tx / spec.tw * spec.w));
    var y = Math.min(spec.h - 1, Math.floor(ty / spec.th * spec.h));
    var q = values(img.dataset.map)[(tile * spec.h + y) * spec.w + x];
    if (q === 255) { return null; }
    var value = spec.lo[tile] + q / 254 * (spec.hi[tile] - spec.lo[tile]);
    return { x: x * spec.step, y: y * spec.step, value: value, label: spec.labels[tile] || "" };
  }

  var hover = document.getElementById("cnnviz-hover");
  function hide() { hover.hidden = true; }
  all("img[data-map]").forEach(function (img) {
    img.addEventListener("mousemove", function (event) {
      var found = lookup(img, event);
      if (!found) { hide(); return; }
      hover.dataset.x = String(found.x);
      hover.dataset.y = String(found.y);
      hover.dataset.value = String(found.value);
      hover.dataset.label = found.label;
      hover.textContent = (found.label ? found.label + "  " : "") + "x " + found.x + ", y " +
        found.y + ": " + format(found.value);
      hover.style.left = (event.clientX + 14) + "px";
      hover.style.top = (event.clientY + 14) + "px";
      hover.hidden = false;
    });
    img.addEventListener("mouseleave", hide);
  });
})();
