// Charts drawn as SVG, no library: stacked bars (tasks by outcome, upstream
// errors), lines (latency percentiles), horizontal bars (errors by status)
// and a sparkline (queue depth). Every mark carries a <title> tooltip.

const NS = "http://www.w3.org/2000/svg";
/** Drawing units: a wide chart (a full row) or a half-row one, so text keeps its size. */
let W = 600;
let H = 220;
const PAD = { left: 44, right: 10, top: 10, bottom: 26 };

function size(wide) {
  // A phone shows every chart at full width, about 350 px: fewer units keep the text legible.
  const narrow = window.innerWidth < 760;
  W = narrow ? 420 : wide ? 1180 : 600;
  H = narrow ? 240 : wide ? 250 : 220;
}

function el(name, attrs = {}, ...children) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) node.append(c);
  return node;
}

function title(text) {
  return el("title", {}, text);
}

/**
 * The top of an axis with four gridlines at round steps (1, 2 or 5 times a
 * power of ten, at least `minStep`): the smallest 4 × step that reaches `v`.
 */
function niceMax(v, minStep = 1) {
  if (!(v > 0)) return 4 * minStep;
  let p = 10 ** Math.floor(Math.log10(v / 4));
  for (;;) {
    for (const m of [1, 2, 5]) {
      const step = Math.max(m * p, minStep);
      if (4 * step >= v) return 4 * step;
    }
    p *= 10;
  }
}

function clock(iso, withDate) {
  const d = new Date(iso);
  const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return withDate ? `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${hm}` : hm;
}

function frame(max, format, labels, caption) {
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": caption });
  svg.append(title(caption));
  const plotH = H - PAD.top - PAD.bottom;
  for (let i = 0; i <= 4; i++) {
    const y = PAD.top + plotH - (plotH * i) / 4;
    svg.append(el("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: i === 0 ? "axis" : "grid" }));
    svg.append(el("text", { x: PAD.left - 6, y: y + 4, class: "tick", "text-anchor": "end" }, format((max * i) / 4)));
  }
  const n = labels.length;
  const step = Math.max(1, Math.ceil(n / (W < 500 ? 4 : 6)));
  const bw = (W - PAD.left - PAD.right) / Math.max(n, 1);
  for (let i = 0; i < n; i += step) {
    svg.append(el("text", { x: PAD.left + bw * i + bw / 2, y: H - 8, class: "tick", "text-anchor": "middle" }, labels[i]));
  }
  return { svg, plotH, bw };
}

function count(v) {
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

/**
 * Stacked bars: `buckets` (each with `start` and the series' keys),
 * `series` [{key, label, cls}].
 */
export function stackedBars(buckets, series, caption, longSpan, wide) {
  size(wide);
  const totals = buckets.map((b) => series.reduce((s, x) => s + (b[x.key] || 0), 0));
  const max = niceMax(Math.max(0, ...totals));
  const { svg, plotH, bw } = frame(max, count, buckets.map((b) => clock(b.start, false)), caption);
  buckets.forEach((b, i) => {
    let y = PAD.top + plotH;
    const parts = [];
    for (const s of series) {
      const v = b[s.key] || 0;
      if (!v) continue;
      const h = (plotH * v) / max;
      y -= h;
      parts.push(`${s.label} ${v}`);
      svg.append(el("rect", { x: PAD.left + bw * i + bw * 0.12, y, width: Math.max(bw * 0.76, 1), height: h, class: s.cls },
        title(`${clock(b.start, longSpan)}: ${s.label} ${v}`)));
    }
    if (!parts.length) return;
    svg.append(el("rect", { x: PAD.left + bw * i, y: PAD.top, width: bw, height: plotH, class: "hit" },
      title(`${clock(b.start, longSpan)} — ${parts.join(", ")}`)));
  });
  return svg;
}

/** Lines over the buckets: `series` [{key, label, cls}], values in ms (gaps where null). */
export function lines(buckets, series, caption, longSpan) {
  size(false);
  const values = buckets.flatMap((b) => series.map((s) => b[s.key]).filter((v) => v != null));
  const max = niceMax(Math.max(0, ...values), 100);
  const { svg, plotH, bw } = frame(max, seconds, buckets.map((b) => clock(b.start, false)), caption);
  for (const s of series) {
    let d = "";
    let pen = false;
    buckets.forEach((b, i) => {
      const v = b[s.key];
      if (v == null) {
        pen = false;
        return;
      }
      const x = PAD.left + bw * i + bw / 2;
      const y = PAD.top + plotH - (plotH * v) / max;
      d += `${pen ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)} `;
      pen = true;
      svg.append(el("circle", { cx: x, cy: y, r: 2.5, class: s.cls }, title(`${clock(b.start, longSpan)}: ${s.label} ${seconds(v)}`)));
    });
    if (d) svg.insertBefore(el("path", { d, class: `line ${s.cls}` }), svg.querySelector("circle"));
  }
  return svg;
}

/** `1234` ms as `1.2 s`. */
export function seconds(ms) {
  if (ms == null) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 120000) return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
  return `${(ms / 60000).toFixed(1)} min`;
}

/** Horizontal bars: items [{label, value, detail}]. */
export function hbars(items, caption) {
  size(false);
  const rowH = 26;
  const h = Math.max(rowH * items.length + 8, 40);
  const svg = el("svg", { viewBox: `0 0 ${W} ${h}`, class: "chart hbars", role: "img", "aria-label": caption });
  svg.append(title(caption));
  const max = niceMax(Math.max(0, ...items.map((i) => i.value)));
  const left = 90;
  items.forEach((item, i) => {
    const y = 4 + i * rowH;
    const w = ((W - left - 60) * item.value) / max;
    svg.append(el("text", { x: left - 8, y: y + 16, class: "label", "text-anchor": "end" }, item.label));
    svg.append(el("rect", { x: left, y: y + 3, width: Math.max(w, 2), height: rowH - 8, rx: 3, class: item.cls || "bar-error" }, title(item.detail)));
    svg.append(el("text", { x: left + Math.max(w, 2) + 6, y: y + 16, class: "label" }, String(item.value)));
  });
  return svg;
}

/** A task's progress, 0–100, as a thin bar. */
export function progressBar(value, cls) {
  const v = Math.max(0, Math.min(100, Number(value) || 0));
  return el("svg", { viewBox: "0 0 100 6", class: `pbar ${cls}`, role: "img", "aria-label": `${v} %` },
    el("rect", { width: 100, height: 6, rx: 3, class: "track" }),
    v ? el("rect", { width: v, height: 6, rx: 3, class: "fill" }) : "");
}

/** A small line of recent values (e.g. queue depth samples). */
export function sparkline(values, caption) {
  const w = 240;
  const h = 48;
  const svg = el("svg", { viewBox: `0 0 ${w} ${h}`, class: "spark", role: "img", "aria-label": caption });
  svg.append(title(caption));
  if (values.length < 2) {
    svg.append(el("line", { x1: 0, x2: w, y1: h - 2, y2: h - 2, class: "axis" }));
    return svg;
  }
  const max = Math.max(1, ...values);
  const pts = values.map((v, i) => `${((w * i) / (values.length - 1)).toFixed(1)},${(h - 3 - ((h - 6) * v) / max).toFixed(1)}`);
  svg.append(el("polyline", { points: pts.join(" "), class: "line queue" }));
  return svg;
}
