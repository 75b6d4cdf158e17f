/* Small line charts as inline SVG: the last hour of a deployment's series. */
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 300, H = 120, L = 34, R = 6, T = 8, B = 18;

  function el(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const step = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 2, 2.5, 5, 10]) if (value <= m * step) return m * step;
    return 10 * step;
  }

  function fmt(v) {
    if (v === null || v === undefined) return "–";
    return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
  }

  /* points: [{at, ...}], lines: [{key, name}], window: seconds shown, up to now */
  function drawChart(title, unit, points, lines, maxSeconds) {
    /* the last hour at most; less while the series is younger (at least five minutes) */
    const now = Date.now() / 1000;
    const first = points.length ? points[0].at : now;
    const windowSeconds = Math.min(maxSeconds, Math.max(300, now - first));
    const start = now - windowSeconds;
    let top = 0;
    for (const p of points) for (const l of lines) if (p[l.key] != null) top = Math.max(top, p[l.key]);
    top = niceMax(top);
    const x = (t) => L + ((t - start) / windowSeconds) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    const latest = lines.map((l) => {
      const last = [...points].reverse().find((p) => p[l.key] != null);
      return `${l.name} ${last ? fmt(last[l.key]) : "–"} ${unit}`;
    });
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": `${title}, last ${Math.round(windowSeconds / 60)} minutes; now: ${latest.join(", ")}` });
    svg.append(el("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
    svg.append(el("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
    svg.append(el("text", { x: L - 4, y: T + 8, "text-anchor": "end" }, fmt(top)));
    svg.append(el("text", { x: L - 4, y: H - B, "text-anchor": "end" }, "0"));
    svg.append(el("text", { x: L, y: H - 4 }, `−${Math.round(windowSeconds / 60)} min`));
    svg.append(el("text", { x: W - R, y: H - 4, "text-anchor": "end" }, "now"));
    lines.forEach((l, i) => {
      const coords = points.filter((p) => p[l.key] != null && p.at >= start)
        .map((p) => `${x(p.at).toFixed(1)},${y(p[l.key]).toFixed(1)}`);
      if (coords.length === 1) coords.push(coords[0].replace(/^[^,]+/, (v) => String(+v + 1)));
      svg.append(el("polyline", { class: `s${i}`, points: coords.join(" ") }));
    });
    const figure = document.createElement("figure");
    figure.className = "chart";
    const caption = document.createElement("figcaption");
    caption.textContent = `${title} (${unit})`;
    const legend = document.createElement("div");
    legend.className = "legend";
    latest.forEach((text, i) => {
      const span = document.createElement("span");
      span.className = `s${i}`;
      span.textContent = text;
      legend.append(span);
    });
    figure.append(caption, svg, legend);
    return figure;
  }

  window.OrchardCharts = { drawChart };
})();
