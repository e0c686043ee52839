"""The page of the HTML head view: CSS and JavaScript inline, no network.

``__TITLE__`` is replaced by the HTML-escaped title and ``__DATA__`` by JSON that is safe
inside a ``<script>`` element (``<``, ``>`` and ``&`` written as ``\\u003c`` and so on).
The data: ``{"title", "queries": [str], "keys": [str], "selfAttention": bool,
"minWeight": float, "compact": bool, "notes": [str], "layers": [layer]}``, a layer being
``{"name": str, "heads": [[[w (Lk)] (Lq)] (H)]}``, or on a compact page
``{"name", "count": H, "k", "indexBytes": 2|4, "index", "weight", "rest"}``: base64 of
little-endian unsigned integers, ``(H, Lq, k)`` key indices and weights (``w · 65535``) of each
query's top-k keys, and ``(H, Lq)`` remaining mass; or a key-totals layer
``{"name", "totals": [[t (Lk)] (H)]}`` (no lines: the key tokens are shaded by the mean over
the heads shown, relative to its largest). Compact layers are decoded when first shown;
a key's incoming lines come from an index built once per head. Without a focused token a
compact page draws only the strongest lines (``MAX_OVERVIEW``).

What is drawn is exposed for tests and tools: every line is an SVG ``line.attn-line`` with
``data-query``, ``data-key``, ``data-head`` and ``data-weight``; every token a ``g.token``
with ``data-side`` (``query``/``key``), ``data-index`` and ``data-token``; and
``window.attnkitState`` holds ``{layer, layerName, head ("all" or a number), focus, pinned,
lines: [{query, key, head, weight}], total, compact, keyTotals, drawMs}`` after every redraw
(``total``: the lines there were before the overview's cap; ``keyTotals``: the key totals
shown, the mean over the heads shown, or ``null``; ``drawMs``: how long the redraw took); a
key token of a key-totals layer carries its shown total in ``data-total`` and its shade in
``data-shade`` (0..1, the strongest key 1).
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
  #notes p { color: #7a4a00; background: #fff6e0; font-size: 12px; margin: 0 0 6px;
             padding: 3px 6px; border-radius: 3px; }
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
<div id="notes"></div>
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
  var FIXED = 65535, MAX_OVERVIEW = 3000;
  var NQ = DATA.queries.length, NK = DATA.keys.length;
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                 "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939",
                 "#8c6d31", "#843c39", "#7b4173", "#3182bd"];
  var state = { layer: 0, head: "all", hidden: {}, hover: null, pinned: null };
  var overviewCache = { key: null, lines: null, total: 0 };
  var shaded = [];
  var svg = document.getElementById("view");
  var layerSelect = document.getElementById("layer");
  var headSelect = document.getElementById("head");
  var legend = document.getElementById("legend");
  var details = document.getElementById("details");
  (DATA.notes || []).forEach(function (note) {
    var p = document.createElement("p");
    p.textContent = note;
    document.getElementById("notes").appendChild(p);
  });

  // -- the weights: dense arrays, or each query's top-k keys (compact pages) --------------
  function decode(text, bytes) {
    var bin = atob(text), n = bin.length, buf = new Uint8Array(n);
    for (var i = 0; i < n; i++) buf[i] = bin.charCodeAt(i);
    return bytes === 4 ? new Uint32Array(buf.buffer) : new Uint16Array(buf.buffer);
  }
  function unpack(layer) {
    if (!layer.decoded) {
      layer.decoded = { index: decode(layer.index, layer.indexBytes),
                        weight: decode(layer.weight, 2), rest: decode(layer.rest, 2),
                        columns: {} };
    }
    return layer.decoded;
  }
  function headCount(layer) {
    if (layer.totals) return layer.totals.length;
    return DATA.compact ? layer.count : layer.heads.length;
  }
  function rowOf(layer, h, i) {  // [[key, weight]] of query i in head h, weight > 0
    var out = [], j, w;
    if (layer.totals) return out;  // key totals: which query gave what is not kept
    if (!DATA.compact) {
      var W = layer.heads[h][i];
      for (j = 0; j < NK; j++) if (W[j] > 0) out.push([j, W[j]]);
      return out;
    }
    var d = unpack(layer), base = (h * NQ + i) * layer.k;
    for (var t = 0; t < layer.k; t++) {
      w = d.weight[base + t] / FIXED;
      if (w > 0) out.push([d.index[base + t], w]);
    }
    return out;
  }
  function columnOf(layer, h, j) {  // [[query, weight]] into key j in head h, weight > 0
    var i, w, out;
    if (layer.totals) return [];
    if (!DATA.compact) {
      out = [];
      for (i = 0; i < NQ; i++) { w = layer.heads[h][i][j]; if (w > 0) out.push([i, w]); }
      return out;
    }
    var d = unpack(layer);
    if (!d.columns[h]) {
      var columns = new Array(NK);
      for (var c = 0; c < NK; c++) columns[c] = [];
      for (i = 0; i < NQ; i++) {
        var base = (h * NQ + i) * layer.k;
        for (var t = 0; t < layer.k; t++) {
          w = d.weight[base + t] / FIXED;
          if (w > 0) columns[d.index[base + t]].push([i, w]);
        }
      }
      d.columns[h] = columns;
    }
    return d.columns[h][j];
  }
  function restOf(layer, h, i) {
    return DATA.compact && !layer.totals ? unpack(layer).rest[h * NQ + i] / FIXED : 0;
  }
  function keyTotals(layer, heads) {  // mean over heads of each key's total, or null
    if (!layer.totals) return null;
    var acc = new Float64Array(NK);
    heads.forEach(function (h) {
      for (var j = 0; j < NK; j++) acc[j] += layer.totals[h][j];
    });
    if (heads.length) for (var j = 0; j < NK; j++) acc[j] /= heads.length;
    return acc;
  }
  function focusPairs(layer, h, focus) {
    return focus.side === "query" ? rowOf(layer, h, focus.index) : columnOf(layer, h, focus.index);
  }
  function mix(layer, heads, focus) {  // mean over heads of the focused token's weights
    var acc = new Float64Array(focus.side === "query" ? NK : NQ);
    heads.forEach(function (h) {
      focusPairs(layer, h, focus).forEach(function (p) { acc[p[0]] += p[1]; });
    });
    if (heads.length) for (var i = 0; i < acc.length; i++) acc[i] /= heads.length;
    return acc;
  }

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
  var rows = Math.max(NQ, NK);
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
    var count = headCount(DATA.layers[state.layer]);
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
    var count = headCount(DATA.layers[state.layer]), out = [];
    if (state.head !== "all") return [state.head];
    for (var h = 0; h < count; h++) if (!state.hidden[h]) out.push(h);
    return out;
  }

  // Lines without a focused token: all of them (dense pages), or the strongest MAX_OVERVIEW
  // (compact pages), computed once per layer and set of heads.
  function overview(layer, heads) {
    var key = state.layer + ":" + heads.join(",");
    if (overviewCache.key === key) return overviewCache;
    var lines = [];
    if (layer.totals || !DATA.compact) {
      heads.forEach(function (h) {
        for (var i = 0; i < NQ; i++) {
          rowOf(layer, h, i).forEach(function (p) {
            if (p[1] < DATA.minWeight) return;
            lines.push({ query: i, key: p[0], head: h, weight: p[1] });
          });
        }
      });
      overviewCache = { key: key, lines: lines, total: lines.length };
      return overviewCache;
    }
    var d = unpack(layer), strong = [], total = 0, cut = 0;
    heads.forEach(function (h) {
      var end = (h + 1) * NQ * layer.k;
      for (var e = h * NQ * layer.k; e < end; e++) {
        if (d.weight[e] / FIXED >= DATA.minWeight) { strong.push(d.weight[e]); total++; }
      }
    });
    if (total > MAX_OVERVIEW) {
      strong = Uint16Array.from(strong).sort();
      cut = strong[strong.length - MAX_OVERVIEW];
    }
    heads.forEach(function (h) {
      for (var i = 0; i < NQ; i++) {
        var base = (h * NQ + i) * layer.k;
        for (var t = 0; t < layer.k; t++) {
          var q = d.weight[base + t];
          if (q / FIXED >= DATA.minWeight && q >= cut && lines.length < MAX_OVERVIEW) {
            lines.push({ query: i, key: d.index[base + t], head: h, weight: q / FIXED });
          }
        }
      }
    });
    overviewCache = { key: key, lines: lines, total: total };
    return overviewCache;
  }

  function draw() {
    var started = performance.now();
    var layer = DATA.layers[state.layer];
    var heads = visibleHeads();
    var focus = state.hover || state.pinned;
    var lines = [], total;
    if (focus) {
      heads.forEach(function (h) {
        focusPairs(layer, h, focus).forEach(function (p) {
          if (p[1] < DATA.minWeight) return;
          var fromQuery = focus.side === "query";
          lines.push({ query: fromQuery ? focus.index : p[0], key: fromQuery ? p[0] : focus.index,
                       head: h, weight: p[1] });
        });
      });
      total = lines.length;
    } else {
      var all = overview(layer, heads);
      lines = all.lines.slice();
      total = all.total;
    }
    lines.sort(function (a, b) { return a.weight - b.weight; });  // strongest drawn on top
    lineLayer.textContent = "";
    var fragment = document.createDocumentFragment();
    lines.forEach(function (d) {
      var wt = Math.min(1, Math.max(0, d.weight));
      el("line", { "class": "attn-line", x1: xLeft, y1: y(d.query), x2: xRight, y2: y(d.key),
                   stroke: colour(d.head), "stroke-opacity": wt.toFixed(4),
                   "stroke-width": (focus ? 1 + 3 * wt : 1.5).toFixed(2),
                   "data-query": d.query, "data-key": d.key, "data-head": d.head,
                   "data-weight": d.weight }, fragment);
    });
    lineLayer.appendChild(fragment);
    var mixed = focus && heads.length ? mix(layer, heads, focus) : null;
    var totals = keyTotals(layer, heads);
    shade(heads, focus, mixed);
    shadeTotals(heads, totals);
    Array.prototype.forEach.call(legend.children, function (s) {
      var h = Number(s.getAttribute("data-head"));
      s.classList.toggle("off", state.head === "all" ? !!state.hidden[h] : state.head !== h);
      s.classList.toggle("current", state.head === h);
    });
    ["query", "key"].forEach(function (side) {
      var p = state.pinned;
      tokenNodes[side].forEach(function (n, i) {
        n.g.classList.toggle("pinned", !!p && p.side === side && p.index === i);
      });
    });
    if (totals) describeTotals(heads, totals);
    else describe(layer, heads, focus, mixed, lines.length, total);
    window.attnkitState = {
      layer: state.layer, layerName: layer.name, head: state.head,
      focus: focus ? { side: focus.side, index: focus.index } : null,
      pinned: state.pinned ? { side: state.pinned.side, index: state.pinned.index } : null,
      lines: lines.slice().reverse(), total: total, compact: !!DATA.compact,
      keyTotals: totals ? Array.prototype.slice.call(totals) : null,
      drawMs: performance.now() - started
    };
  }

  function shade(heads, focus, mixed) {
    shaded.forEach(function (n) { n.bg.style.fill = "#fff"; n.bg.style.fillOpacity = 1; });
    shaded = [];
    if (!focus) return;
    var other = focus.side === "query" ? "key" : "query";
    var tint = heads.length === 1 ? colour(heads[0]) : "#555";
    var own = tokenNodes[focus.side][focus.index];
    own.bg.style.fill = "#e8e8e8";
    shaded.push(own);
    if (!mixed) return;
    tokenNodes[other].forEach(function (n, k) {
      if (mixed[k] <= 0) return;
      n.bg.style.fill = tint;
      n.bg.style.fillOpacity = Math.min(1, mixed[k]) * 0.45;
      shaded.push(n);
    });
  }
  // Key totals: every key token shaded by its total relative to the layer's largest (the
  // strongest key looks strongest, whatever the scale: totals sum to the number of queries).
  function shadeTotals(heads, totals) {
    tokenNodes.key.forEach(function (n) {
      n.g.removeAttribute("data-total");
      n.g.removeAttribute("data-shade");
    });
    if (!totals) return;
    var top = 0;
    for (var j = 0; j < NK; j++) top = Math.max(top, totals[j]);
    var tint = heads.length === 1 ? colour(heads[0]) : "#555";
    tokenNodes.key.forEach(function (n, j) {
      var level = top > 0 ? totals[j] / top : 0;
      n.g.setAttribute("data-total", totals[j]);
      n.g.setAttribute("data-shade", level.toFixed(4));
      if (level <= 0) return;
      n.bg.style.fill = tint;
      n.bg.style.fillOpacity = 0.75 * level;
      shaded.push(n);
    });
  }
  function describeTotals(heads, totals) {
    details.textContent = "";
    if (!heads.length) return;
    var order = [];
    for (var k = 0; k < NK; k++) if (totals[k] > 0) order.push(k);
    order.sort(function (a, b) { return totals[b] - totals[a]; });
    details.appendChild(document.createTextNode(
      "Attention received in total, from all queries " +
      (heads.length === 1 ? "(head " + heads[0] + "): " : "(mean of " + heads.length +
       " heads): ")));
    order.slice(0, 5).forEach(function (k) {
      var t = document.createElement("span");
      t.className = "tok";
      t.textContent = shown(DATA.keys[k]);
      details.appendChild(t);
      var w = document.createElement("span");
      w.className = "w";
      w.textContent = " " + totals[k].toFixed(3);
      details.appendChild(w);
    });
  }
  function describe(layer, heads, focus, mixed, drawn, total) {
    details.textContent = "";
    if (!focus) {
      if (drawn < total) {
        details.textContent = "Overview: the strongest " + drawn + " of " + total +
          " lines; hover or click a token for all of its own.";
      }
      return;
    }
    if (!heads.length) return;
    var fromQuery = focus.side === "query";
    var tokens = fromQuery ? DATA.keys : DATA.queries;
    var order = [];
    for (var k = 0; k < mixed.length; k++) if (mixed[k] > 0) order.push(k);
    order.sort(function (a, b) { return mixed[b] - mixed[a]; });
    var ranked = order.slice(0, 5).map(function (k) {
      return { token: tokens[k], weight: mixed[k] };
    });
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
    if (DATA.compact && fromQuery) {
      var rest = 0;
      heads.forEach(function (h) { rest += restOf(layer, h, focus.index); });
      details.appendChild(document.createTextNode(
        "; all other keys together: " + (rest / heads.length).toFixed(3)));
    }
  }

  buildHeads();
  draw();
})();
</script>
</body>
</html>
"""
