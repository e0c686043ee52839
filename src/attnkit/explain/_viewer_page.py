"""The page of the HTML head view: CSS and JavaScript inline, no network.

``__TITLE__`` is replaced by the HTML-escaped title and ``__DATA__`` by JSON that is safe
inside a ``<script>`` element (``<``, ``>`` and ``&`` written as ``\\u003c`` and so on).
The data: ``{"title", "queries": [str], "keys": [str], "selfAttention": bool,
"minWeight": float, "layers": [{"name": str, "heads": [[[w (Lk)] (Lq)] (H)]}]}``.

What is drawn is exposed for tests and tools: every line is an SVG ``line.attn-line`` with
``data-query``, ``data-key``, ``data-head`` and ``data-weight``; every token a ``g.token``
with ``data-side`` (``query``/``key``), ``data-index`` and ``data-token``; and
``window.attnkitState`` holds ``{layer, layerName, head ("all" or a number), focus, pinned,
lines: [{query, key, head, weight}]}`` after every redraw.
"""

PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="attnkit">
<title>__TITLE__</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 16px;
         color: #222; background: #fff; }
  h1 { font-size: 18px; margin: 0 0 10px; font-weight: 600; }
  .controls { display: flex; flex-wrap: wrap; gap: 14px; align-items: center; font-size: 14px;
              margin-bottom: 6px; }
  select { font-size: 14px; padding: 2px 4px; }
  .legend { display: flex; flex-wrap: wrap; gap: 4px; }
  .swatch { display: inline-flex; align-items: center; gap: 4px; font-size: 12px;
            padding: 1px 6px; border: 1px solid #ccc; border-radius: 3px; cursor: pointer;
            user-select: none; background: #fff; }
  .swatch .chip { width: 11px; height: 11px; border-radius: 2px; display: inline-block; }
  .swatch.off { opacity: 0.3; }
  .swatch.current { border-color: #222; }
  .hint { color: #666; font-size: 12px; margin-bottom: 6px; }
  svg { display: block; }
  svg text { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
             font-size: 13px; dominant-baseline: central; fill: #222; }
  svg text.heading { font-family: system-ui, sans-serif; font-size: 12px; fill: #666; }
  .token { cursor: pointer; outline: none; }
  .token rect.bg { fill: #fff; stroke: none; }
  .token:hover rect.frame, .token:focus rect.frame { stroke: #888; }
  .token rect.frame { fill: none; stroke: none; stroke-width: 1; }
  .token.pinned rect.frame { stroke: #d62728; stroke-width: 2; }
  .attn-line { pointer-events: none; }
  #details { font-size: 13px; min-height: 1.6em; margin-top: 6px; }
  #details .w { color: #666; margin-right: 10px; }
  #details .tok { font-family: ui-monospace, "DejaVu Sans Mono", monospace;
                  background: #f1f1f1; padding: 0 3px; border-radius: 2px; }
</style>
</head>
<body>
<h1 id="title">__TITLE__</h1>
<div class="controls">
  <label>Layer <select id="layer" aria-label="layer"></select></label>
  <label>Head <select id="head" aria-label="head"></select></label>
  <div class="legend" id="legend" aria-label="heads"></div>
</div>
<div class="hint">Hover a token on the left to see what it attends to, on the right to see
what attends to it; click a token to pin it (click again to release).</div>
<svg id="view" xmlns="http://www.w3.org/2000/svg" role="img"
     aria-label="attention between tokens"></svg>
<div id="details" aria-live="polite"></div>
<script type="application/json" id="attnkit-data">__DATA__</script>
<script>
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("attnkit-data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var ROW = 22, TOP = 30, GAP = 220, MAXCHARS = 40;
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                 "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939",
                 "#8c6d31", "#843c39", "#7b4173", "#3182bd"];
  var state = { layer: 0, head: "all", hidden: {}, hover: null, pinned: null };
  var svg = document.getElementById("view");
  var layerSelect = document.getElementById("layer");
  var headSelect = document.getElementById("head");
  var legend = document.getElementById("legend");
  var details = document.getElementById("details");

  function colour(h) {
    if (h < PALETTE.length) return PALETTE[h];
    return "hsl(" + ((h * 137.508) % 360).toFixed(1) + ",60%,45%)";
  }
  function shown(token) {
    if (token === "") return "\u2205";
    var t = token.replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5");
    if (/^\s+$/.test(t)) t = t.replace(/ /g, "\u2423");
    return t.length > MAXCHARS ? t.slice(0, MAXCHARS - 1) + "\u2026" : t;
  }
  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    for (var key in attrs) node.setAttribute(key, attrs[key]);
    if (parent) parent.appendChild(node);
    return node;
  }
  function textWidth(tokens) {
    var ctx = document.createElement("canvas").getContext("2d");
    ctx.font = "13px ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace";
    var w = 40;
    tokens.forEach(function (t) { w = Math.max(w, ctx.measureText(shown(t)).width); });
    return Math.ceil(w) + 16;
  }

  var leftHead = DATA.selfAttention ? "attends from" : "queries (target)";
  var rightHead = DATA.selfAttention ? "attends to" : "keys (source)";
  var leftW = textWidth(DATA.queries.concat([leftHead]));
  var rightW = textWidth(DATA.keys.concat([rightHead]));
  var xLeft = leftW, xRight = leftW + GAP;
  var rows = Math.max(DATA.queries.length, DATA.keys.length);
  var width = leftW + GAP + rightW, height = TOP + rows * ROW + 8;
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  el("text", { x: xLeft - 8, y: 12, "text-anchor": "end", "class": "heading" }, svg)
    .textContent = leftHead;
  el("text", { x: xRight + 8, y: 12, "class": "heading" }, svg).textContent = rightHead;
  var lineLayer = el("g", { id: "lines" }, svg);
  var tokenNodes = { query: [], key: [] };

  function y(i) { return TOP + i * ROW + ROW / 2; }
  function addToken(side, i, token) {
    var left = side === "query";
    var g = el("g", { "class": "token", "data-side": side, "data-index": i, tabindex: 0,
                      role: "button" }, svg);
    g.setAttribute("data-token", token);
    var x0 = left ? 0 : xRight, w = left ? leftW : rightW;
    var bg = el("rect", { "class": "bg", x: x0, y: y(i) - ROW / 2 + 1, width: w,
                          height: ROW - 2, rx: 3 }, g);
    el("rect", { "class": "frame", x: x0 + 0.5, y: y(i) - ROW / 2 + 1.5, width: w - 1,
                 height: ROW - 3, rx: 3 }, g);
    var text = el("text", { x: left ? xLeft - 8 : xRight + 8, y: y(i),
                            "text-anchor": left ? "end" : "start" }, g);
    text.textContent = shown(token);
    el("title", {}, g).textContent = token;
    g.addEventListener("mouseenter", function () {
      state.hover = { side: side, index: i };
      draw();
    });
    g.addEventListener("mouseleave", function () { state.hover = null; draw(); });
    g.addEventListener("click", function () { togglePin(side, i); });
    g.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); togglePin(side, i); }
    });
    tokenNodes[side].push({ g: g, bg: bg });
  }
  function togglePin(side, i) {
    var p = state.pinned;
    state.pinned = p && p.side === side && p.index === i ? null : { side: side, index: i };
    draw();
  }
  DATA.queries.forEach(function (t, i) { addToken("query", i, t); });
  DATA.keys.forEach(function (t, i) { addToken("key", i, t); });

  DATA.layers.forEach(function (layer, l) {
    var o = document.createElement("option");
    o.value = String(l);
    o.textContent = layer.name;
    layerSelect.appendChild(o);
  });
  layerSelect.addEventListener("change", function () {
    state.layer = Number(layerSelect.value);
    buildHeads();
    draw();
  });
  headSelect.addEventListener("change", function () {
    state.head = headSelect.value === "all" ? "all" : Number(headSelect.value);
    draw();
  });

  function buildHeads() {
    var count = DATA.layers[state.layer].heads.length;
    if (state.head !== "all" && state.head >= count) state.head = "all";
    headSelect.textContent = "";
    legend.textContent = "";
    var all = document.createElement("option");
    all.value = "all";
    all.textContent = "all heads";
    headSelect.appendChild(all);
    for (var h = 0; h < count; h++) {
      var o = document.createElement("option");
      o.value = String(h);
      o.textContent = "head " + h;
      headSelect.appendChild(o);
      var s = document.createElement("span");
      s.className = "swatch";
      s.setAttribute("data-head", h);
      s.title = "in 'all heads': show or hide head " + h + "; otherwise: show head " + h;
      var chip = document.createElement("span");
      chip.className = "chip";
      chip.style.background = colour(h);
      s.appendChild(chip);
      s.appendChild(document.createTextNode(String(h)));
      s.addEventListener("click", (function (head) {
        return function () {
          if (state.head === "all") state.hidden[head] = !state.hidden[head];
          else { state.head = head; headSelect.value = String(head); }
          draw();
        };
      })(h));
      legend.appendChild(s);
    }
    headSelect.value = String(state.head);
  }

  function visibleHeads() {
    var count = DATA.layers[state.layer].heads.length, out = [];
    if (state.head !== "all") return [state.head];
    for (var h = 0; h < count; h++) if (!state.hidden[h]) out.push(h);
    return out;
  }

  function draw() {
    var layer = DATA.layers[state.layer];
    var heads = visibleHeads();
    var focus = state.hover || state.pinned;
    var lines = [];
    heads.forEach(function (h) {
      var W = layer.heads[h];
      for (var i = 0; i < DATA.queries.length; i++) {
        if (focus && focus.side === "query" && focus.index !== i) continue;
        for (var j = 0; j < DATA.keys.length; j++) {
          if (focus && focus.side === "key" && focus.index !== j) continue;
          var w = W[i][j];
          if (w >= DATA.minWeight && w > 0) lines.push({ query: i, key: j, head: h, weight: w });
        }
      }
    });
    lines.sort(function (a, b) { return a.weight - b.weight; });  // strongest drawn on top
    lineLayer.textContent = "";
    lines.forEach(function (d) {
      var wt = Math.min(1, Math.max(0, d.weight));
      el("line", { "class": "attn-line", x1: xLeft, y1: y(d.query), x2: xRight, y2: y(d.key),
                   stroke: colour(d.head), "stroke-opacity": wt.toFixed(4),
                   "stroke-width": (focus ? 1 + 3 * wt : 1.5).toFixed(2),
                   "data-query": d.query, "data-key": d.key, "data-head": d.head,
                   "data-weight": d.weight }, lineLayer);
    });
    shade(layer, heads, focus);
    Array.prototype.forEach.call(legend.children, function (s) {
      var h = Number(s.getAttribute("data-head"));
      s.classList.toggle("off", state.head === "all" ? !!state.hidden[h] : state.head !== h);
      s.classList.toggle("current", state.head === h);
    });
    ["query", "key"].forEach(function (side) {
      tokenNodes[side].forEach(function (n, i) {
        var p = state.pinned;
        n.g.classList.toggle("pinned", !!p && p.side === side && p.index === i);
      });
    });
    describe(layer, heads, focus);
    window.attnkitState = {
      layer: state.layer, layerName: layer.name, head: state.head,
      focus: focus ? { side: focus.side, index: focus.index } : null,
      pinned: state.pinned ? { side: state.pinned.side, index: state.pinned.index } : null,
      lines: lines.slice().reverse()
    };
  }

  function mean(layer, heads, i, j) {
    var s = 0;
    heads.forEach(function (h) { s += layer.heads[h][i][j]; });
    return heads.length ? s / heads.length : 0;
  }
  function shade(layer, heads, focus) {
    ["query", "key"].forEach(function (side) {
      tokenNodes[side].forEach(function (n) {
        n.bg.style.fill = "#fff";
        n.bg.style.fillOpacity = 1;
      });
    });
    if (!focus) return;
    var other = focus.side === "query" ? "key" : "query";
    var tint = heads.length === 1 ? colour(heads[0]) : "#555";
    tokenNodes[focus.side][focus.index].bg.style.fill = "#e8e8e8";
    tokenNodes[other].forEach(function (n, k) {
      var fromQuery = focus.side === "query";
      var i = fromQuery ? focus.index : k, j = fromQuery ? k : focus.index;
      n.bg.style.fill = tint;
      n.bg.style.fillOpacity = Math.min(1, mean(layer, heads, i, j)) * 0.45;
    });
  }
  function describe(layer, heads, focus) {
    details.textContent = "";
    if (!focus || !heads.length) return;
    var fromQuery = focus.side === "query";
    var tokens = fromQuery ? DATA.keys : DATA.queries;
    var ranked = tokens.map(function (t, k) {
      var i = fromQuery ? focus.index : k, j = fromQuery ? k : focus.index;
      return { token: t, weight: mean(layer, heads, i, j) };
    }).sort(function (a, b) { return b.weight - a.weight; }).slice(0, 5);
    var who = document.createElement("span");
    who.className = "tok";
    who.textContent = shown((fromQuery ? DATA.queries : DATA.keys)[focus.index]);
    details.appendChild(who);
    details.appendChild(document.createTextNode(
      (fromQuery ? " attends most to " : " is attended most by ") +
      (heads.length === 1 ? "(head " + heads[0] + "): "
                          : "(mean of " + heads.length + " heads): ")));
    ranked.forEach(function (r) {
      var t = document.createElement("span");
      t.className = "tok";
      t.textContent = shown(r.token);
      details.appendChild(t);
      var w = document.createElement("span");
      w.className = "w";
      w.textContent = " " + r.weight.toFixed(3);
      details.appendChild(w);
    });
  }

  buildHeads();
  draw();
})();
</script>
</body>
</html>
"""
