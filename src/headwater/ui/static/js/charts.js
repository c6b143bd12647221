// Hand-written charts: ring buffers for live series, SVG sparklines, and a canvas
// line/bar chart that redraws at most once per frame however often its data changes.

import { h, onFrame, fmtNum, fmtTime } from "./dom.js";

export const PALETTE = ["#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899", "#84cc16",
  "#f97316", "#14b8a6", "#a855f7", "#64748b"];

/** A fixed-size series of (x, y): pushing past capacity drops the oldest point. */
export class Ring {
  constructor(capacity) {
    this.capacity = capacity;
    this.xs = new Float64Array(capacity);
    this.ys = new Float64Array(capacity);
    this.start = 0;
    this.length = 0;
  }

  push(x, y) {
    const i = (this.start + this.length) % this.capacity;
    if (this.length < this.capacity) this.length += 1;
    else this.start = (this.start + 1) % this.capacity;
    this.xs[i] = x;
    this.ys[i] = y;
  }

  /** Plain arrays, oldest first. */
  arrays() {
    const xs = new Array(this.length);
    const ys = new Array(this.length);
    for (let k = 0; k < this.length; k += 1) {
      const i = (this.start + k) % this.capacity;
      xs[k] = this.xs[i];
      ys[k] = this.ys[i];
    }
    return { xs, ys };
  }

  last() {
    if (!this.length) return null;
    return this.ys[(this.start + this.length - 1) % this.capacity];
  }
}

/** Draw ``values`` into an SVG sparkline (created when ``svg`` is null); returns the SVG.
 *  With ``xs`` (sample times), the line breaks where a sample is missing: a gap over twice
 *  the usual spacing, or a value that is not a number. */
export function sparkline(svg, values, { width = 120, height = 28, slots = values.length, xs = null } = {}) {
  const ns = "http://www.w3.org/2000/svg";
  if (!svg) {
    svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("class", "spark");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.append(document.createElementNS(ns, "path"), document.createElementNS(ns, "path"));
    svg.lastChild.setAttribute("class", "spark-line");
  }
  const n = values.length;
  const max = Math.max(1e-9, ...values.filter((v) => Number.isFinite(v)));
  // The newest point sits at the right edge; an unfilled ring leaves the left empty.
  const span = Math.max(slots, n, 2) - 1;
  const gaps = xs ? sampleGaps(xs) : new Set();
  const segments = [];
  let current = [];
  values.forEach((v, i) => {
    if (!Number.isFinite(v) || gaps.has(i)) {
      if (current.length) segments.push(current);
      current = [];
      if (!Number.isFinite(v)) return;
    }
    const x = ((span - (n - 1) + i) / span) * width;
    const y = height - 2 - (Math.max(0, v) / max) * (height - 4);
    current.push(`${x.toFixed(1)},${y.toFixed(1)}`);
  });
  if (current.length) segments.push(current);
  svg.lastChild.setAttribute("d", segments.map((pts) => `M${pts.join(" L")}`).join(" "));
  svg.firstChild.setAttribute("d", segments.map((pts) => {
    const x0 = pts[0].split(",")[0];
    const x1 = pts[pts.length - 1].split(",")[0];
    return `M${x0},${height} L${pts.join(" L")} L${x1},${height} Z`;
  }).join(" "));
  svg.dataset.points = String(segments.reduce((acc, pts) => acc + pts.length, 0));
  svg.dataset.segments = String(segments.length);
  return svg;
}

/** Indices whose sample came more than twice the median spacing after the one before. */
function sampleGaps(xs) {
  const steps = [];
  for (let i = 1; i < xs.length; i += 1) steps.push(xs[i] - xs[i - 1]);
  const gaps = new Set();
  if (steps.length < 2) return gaps;
  const usual = [...steps].sort((a, b) => a - b)[Math.floor(steps.length / 2)];
  steps.forEach((d, i) => { if (usual > 0 && d > 2 * usual) gaps.add(i + 1); });
  return gaps;
}

/** An x-axis label centred on ``x`` but kept inside the canvas. */
function xLabel(ctx, text, x, y, width) {
  const half = ctx.measureText(text).width / 2;
  ctx.fillText(text, Math.min(Math.max(x, half + 2), width - half - 2), y);
}

/** A round step (1, 2 or 5 × 10^k) cutting ``span`` into about ``count`` parts. */
function niceStep(span, count = 5) {
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
}

/** Round tick positions covering [lo, hi]. */
export function niceTicks(lo, hi, count = 5) {
  const step = niceStep(hi - lo || Math.abs(hi) || 1, count);
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(+t.toPrecision(12));
  return out;
}

const TIME_STEPS = [1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3,
  7200e3, 3 * 3600e3, 6 * 3600e3, 12 * 3600e3, 86400e3, 2 * 86400e3, 7 * 86400e3, 30 * 86400e3];

function timeTicks(lo, hi, count = 5) {
  const step = TIME_STEPS.find((s) => (hi - lo) / s <= count) || TIME_STEPS[TIME_STEPS.length - 1];
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) out.push(t);
  return { ticks: out, step };
}

/** Axis labels are cuts of the one time format (UTC, hence the Z). */
function timeLabel(ms, step) {
  const iso = new Date(ms).toISOString();
  if (step >= 86400e3) return iso.slice(0, 10);
  if (step >= 60e3) return `${iso.slice(11, 16)}Z`;
  return `${iso.slice(11, 19)}Z`;
}

/**
 * The runs of a series to join with lines, as ``[first, last]`` index pairs. A run ends at
 * a missing value, or where the next point is more than ``factor`` times the usual step
 * (the lower median of the steps) away: a line across a gap would invent data.
 */
export function segments(xs, ys, factor = 2) {
  const steps = [];
  for (let i = 1; i < xs.length; i += 1) if (xs[i] > xs[i - 1]) steps.push(xs[i] - xs[i - 1]);
  steps.sort((a, b) => a - b);
  const usual = steps.length ? steps[Math.floor((steps.length - 1) / 2)] : Infinity;
  const out = [];
  let start = -1;
  for (let i = 0; i < xs.length; i += 1) {
    if (!Number.isFinite(ys[i])) {
      if (start >= 0) out.push([start, i - 1]);
      start = -1;
    } else if (start < 0) {
      start = i;
    } else if (xs[i] - xs[i - 1] > factor * usual) {
      out.push([start, i - 1]);
      start = i;
    }
  }
  if (start >= 0) out.push([start, xs.length - 1]);
  return out;
}

/**
 * A canvas chart. ``set(series, {categories})`` takes ``[{name, xs, ys}]``: for a line
 * chart xs are numbers (epoch ms when ``time`` is set); for a bar chart xs index
 * ``categories``. Drawing happens on the next frame.
 */
export class Chart {
  constructor(container, { kind = "line", time = true, height = 220, yLabel = "" } = {}) {
    this.kind = kind;
    this.time = time;
    this.yLabel = yLabel;
    this.series = [];
    this.categories = [];
    this.canvas = h("canvas", { class: "chart-canvas", height });
    this.legend = h("div", { class: "legend" });
    this.tip = h("div", { class: "chart-tip", hidden: true });
    this.root = h("div", { class: "chart", style: `height:${height}px` }, this.canvas, this.tip);
    container.append(this.root, this.legend);
    this.draws = 0;
    this.redraw = onFrame(() => this.draw());
    this.resize = new ResizeObserver(this.redraw);
    this.resize.observe(this.root);
    this.canvas.addEventListener("mousemove", (e) => this.hover(e));
    this.canvas.addEventListener("mouseleave", () => (this.tip.hidden = true));
  }

  set(series, { categories = [] } = {}) {
    this.series = series;
    this.categories = categories;
    this.redraw();
  }

  destroy() {
    this.resize.disconnect();
  }

  frame() {
    const w = this.root.clientWidth;
    const hgt = this.root.clientHeight;
    return { w, h: hgt, left: 56, right: 12, top: 10, bottom: 24 };
  }

  bounds() {
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const s of this.series) {
      for (let i = 0; i < s.xs.length; i += 1) {
        const x = s.xs[i], y = s.ys[i];
        if (y === null || y === undefined || !Number.isFinite(y)) continue;
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
    if (this.kind === "bar") {
      x0 = -0.5;
      x1 = Math.max(0, this.categories.length - 1) + 0.5;
      y0 = Math.min(0, y0);
      y1 = Math.max(0, y1);
    }
    if (!Number.isFinite(y0)) return null;
    if (y0 === y1) [y0, y1] = y0 === 0 ? [0, 1] : [y0 - Math.abs(y0) * 0.1, y1 + Math.abs(y1) * 0.1];
    if (x0 === x1) [x0, x1] = [x0 - (this.time ? 30e3 : 1), x1 + (this.time ? 30e3 : 1)];
    // Widen to whole steps so the top and bottom grid lines frame the data.
    const step = niceStep(y1 - y0);
    const lo = Math.floor(y0 / step) * step;
    const hi = Math.ceil(y1 / step) * step;
    return { x0, x1, y0: lo, y1: hi, ticks: niceTicks(lo, hi) };
  }

  draw() {
    this.draws += 1;
    this.root.dataset.draws = String(this.draws);
    this.root.dataset.kind = this.kind;
    delete this.root.dataset.segments;
    const f = this.frame();
    if (!f.w) return;
    const dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(f.w * dpr);
    this.canvas.height = Math.round(f.h * dpr);
    this.canvas.style.width = `${f.w}px`;
    this.canvas.style.height = `${f.h}px`;
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, f.w, f.h);
    const css = getComputedStyle(this.root);
    const ink = css.getPropertyValue("--muted").trim() || "#888";
    const grid = css.getPropertyValue("--grid").trim() || "#8883";
    ctx.font = "11px system-ui, sans-serif";
    const b = this.bounds();
    this.view = b ? { ...b, f } : null;
    this.renderLegend();
    if (!b) {
      ctx.fillStyle = ink;
      ctx.textAlign = "center";
      ctx.fillText("no data yet", f.w / 2, f.h / 2);
      return;
    }
    const px = (x) => f.left + ((x - b.x0) / (b.x1 - b.x0)) * (f.w - f.left - f.right);
    const py = (y) => f.h - f.bottom - ((y - b.y0) / (b.y1 - b.y0)) * (f.h - f.top - f.bottom);
    this.axes(ctx, b, f, px, py, ink, grid);
    if (this.kind === "bar") this.bars(ctx, b, px, py);
    else this.lines(ctx, px, py);
  }

  axes(ctx, b, f, px, py, ink, grid) {
    ctx.strokeStyle = grid;
    ctx.fillStyle = ink;
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const t of b.ticks) {
      const y = Math.round(py(t)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(f.left, y);
      ctx.lineTo(f.w - f.right, y);
      ctx.stroke();
      ctx.fillText(fmtNum(t), f.left - 6, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const y = f.h - f.bottom + 6;
    if (this.kind === "bar") {
      const every = Math.ceil(this.categories.length / Math.max(1, Math.floor((f.w - f.left) / 70)));
      this.categories.forEach((c, i) => {
        if (i % every === 0) ctx.fillText(String(c).slice(0, 12), px(i), y);
      });
    } else if (this.time) {
      const { ticks, step } = timeTicks(b.x0, b.x1, Math.max(2, Math.floor((f.w - f.left) / 90)));
      for (const t of ticks) xLabel(ctx, timeLabel(t, step), px(t), y, f.w);
    } else {
      for (const t of niceTicks(b.x0, b.x1, Math.max(2, Math.floor((f.w - f.left) / 80)))) {
        if (t >= b.x0 && t <= b.x1) xLabel(ctx, fmtNum(t), px(t), y, f.w);
      }
    }
  }

  /** One path per run of a series (see ``segments``); a lone point is drawn as a dot. */
  lines(ctx, px, py) {
    const counts = this.series.map((s, k) => {
      ctx.strokeStyle = s.color || PALETTE[k % PALETTE.length];
      ctx.fillStyle = ctx.strokeStyle;
      ctx.lineWidth = 1.75;
      const runs = segments(s.xs, s.ys);
      for (const [first, last] of runs) {
        ctx.beginPath();
        ctx.moveTo(px(s.xs[first]), py(s.ys[first]));
        for (let i = first + 1; i <= last; i += 1) ctx.lineTo(px(s.xs[i]), py(s.ys[i]));
        ctx.stroke();
        if (first === last || s.xs.length <= 60) {
          for (let i = first; i <= last; i += 1) {
            ctx.beginPath();
            ctx.arc(px(s.xs[i]), py(s.ys[i]), 2.5, 0, Math.PI * 2);
            ctx.fill();
          }
        }
      }
      return runs.length;
    });
    // The drawn runs per series, for anyone (a test, a screen reader) that cannot see the canvas.
    this.root.dataset.segments = counts.join(",");
  }

  bars(ctx, b, px, py) {
    const n = Math.max(1, this.series.length);
    const slot = Math.min((px(1) - px(0)) * 0.8, 56 * n);
    const w = Math.max(1, slot / n);
    this.series.forEach((s, k) => {
      ctx.fillStyle = s.color || PALETTE[k % PALETTE.length];
      for (let i = 0; i < s.xs.length; i += 1) {
        const v = s.ys[i];
        if (!Number.isFinite(v)) continue;
        const x = px(s.xs[i]) - slot / 2 + k * w;
        const y0 = py(0), y1 = py(v);
        ctx.fillRect(x, Math.min(y0, y1), Math.max(1, w - 1), Math.abs(y1 - y0));
      }
    });
  }

  renderLegend() {
    const names = this.series.map((s) => s.name).join("\u0000");
    if (names === this.legendNames) return;
    this.legendNames = names;
    this.legend.replaceChildren(
      ...this.series.map((s, k) =>
        h("span", {}, h("i", { style: `background:${s.color || PALETTE[k % PALETTE.length]}` }), s.name),
      ),
    );
  }

  hover(e) {
    const v = this.view;
    if (!v || this.kind === "bar" || !this.series.length) return;
    const rect = this.canvas.getBoundingClientRect();
    const fx = (e.clientX - rect.left - v.f.left) / (v.f.w - v.f.left - v.f.right);
    const x = v.x0 + fx * (v.x1 - v.x0);
    const lines = [];
    for (const s of this.series.slice(0, 8)) {
      let best = -1;
      for (let i = 0; i < s.xs.length; i += 1) {
        if (best < 0 || Math.abs(s.xs[i] - x) < Math.abs(s.xs[best] - x)) best = i;
      }
      if (best >= 0) lines.push(`${s.name}: ${fmtNum(s.ys[best])}`);
      if (best >= 0 && lines.length === 1) {
        lines.unshift(this.time ? fmtTime(s.xs[best]) : fmtNum(s.xs[best]));
      }
    }
    this.tip.textContent = lines.join("\n");
    this.tip.hidden = false;
    this.tip.style.left = `${Math.min(e.clientX - rect.left + 12, rect.width - 160)}px`;
    this.tip.style.top = `${e.clientY - rect.top + 8}px`;
  }
}
