// Plots with uPlot (vendored under static/vendor/uplot): the detail plot with the reference
// overlay, and the small per-result sparklines.
//
// Interactions on the detail plot: drag to zoom (uPlot), double-click or `resetZoom()` to see
// everything, Shift-drag or middle-drag to pan, Ctrl/⌘-scroll (trackpad pinch) to zoom,
// Shift-scroll or horizontal scroll to pan, two-finger pinch/pan on touch screens.

const QUERY_COLOR = "#1d4ed8";
const REFERENCE_COLOR = "#d9480f";
const AXIS = { stroke: "#5b6675", grid: { stroke: "#eef1f4" }, ticks: { stroke: "#d9dee5" } };

function xRange(u) {
  const xs = u.data[0];
  return [xs[0], xs[xs.length - 1]];
}

function setX(u, min, max) {
  const [lo, hi] = xRange(u);
  const span = Math.min(max - min, hi - lo);
  let a = Math.max(lo, min);
  let b = a + span;
  if (b > hi) {
    b = hi;
    a = hi - span;
  }
  u.setScale("x", { min: a, max: b });
}

function zoomAt(u, xValue, factor) {
  const { min, max } = u.scales.x;
  setX(u, xValue - (xValue - min) * factor, xValue + (max - xValue) * factor);
}

function panBy(u, delta) {
  const { min, max } = u.scales.x;
  setX(u, min + delta, max + delta);
}

/** uPlot plugin: wheel/trackpad zoom and pan, mouse pan, touch pinch. */
function navigation() {
  return {
    hooks: {
      ready(u) {
        const over = u.over;
        const unitsPerPixel = () => (u.scales.x.max - u.scales.x.min) / over.clientWidth;
        const valueAt = (clientX) => u.posToVal(clientX - over.getBoundingClientRect().left, "x");

        over.addEventListener("wheel", (e) => {
          if (e.ctrlKey || e.metaKey) {
            e.preventDefault();
            zoomAt(u, valueAt(e.clientX), e.deltaY < 0 ? 0.8 : 1.25);
          } else if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) {
            e.preventDefault();
            panBy(u, (e.shiftKey ? e.deltaY : e.deltaX) * unitsPerPixel());
          }
        }, { passive: false });

        // Capture on the root, before uPlot's own mousedown on `over` starts a drag-zoom.
        u.root.addEventListener("mousedown", (e) => {
          if (!over.contains(e.target) || !(e.shiftKey || e.button === 1)) return;
          e.preventDefault();
          e.stopPropagation();
          let last = e.clientX;
          const move = (ev) => {
            panBy(u, (last - ev.clientX) * unitsPerPixel());
            last = ev.clientX;
          };
          const up = () => {
            document.removeEventListener("mousemove", move);
            document.removeEventListener("mouseup", up);
          };
          document.addEventListener("mousemove", move);
          document.addEventListener("mouseup", up);
        }, true);

        let pinch = null;
        const span = (t) => Math.abs(t[0].clientX - t[1].clientX) || 1;
        const mid = (t) => (t[0].clientX + t[1].clientX) / 2;
        over.addEventListener("touchstart", (e) => {
          if (e.touches.length !== 2) return;
          pinch = { span: span(e.touches), mid: mid(e.touches), min: u.scales.x.min, max: u.scales.x.max };
        }, { passive: true });
        over.addEventListener("touchmove", (e) => {
          if (!pinch || e.touches.length !== 2) return;
          e.preventDefault();
          const factor = pinch.span / span(e.touches);
          const perPx = (pinch.max - pinch.min) / over.clientWidth;
          const centre = pinch.min + (pinch.mid - over.getBoundingClientRect().left) * perPx;
          const shift = (pinch.mid - mid(e.touches)) * perPx;
          setX(u, centre - (centre - pinch.min) * factor + shift, centre + (pinch.max - centre) * factor + shift);
        }, { passive: false });
        over.addEventListener("touchend", () => { pinch = null; });
      },
    },
  };
}

function plotHeight() {
  return Math.round(Math.min(520, Math.max(240, window.innerHeight - 330)));
}

/** The detail plot: one query spectrum, optionally one reference overlaid. */
export class SpectrumPlot {
  constructor(container, { onZoomChange } = {}) {
    this.container = container;
    this.onZoomChange = onZoomChange || (() => {});
    this.u = null;
    this.query = null;
    this.reference = null;
    new ResizeObserver(() => this.resize()).observe(container);
  }

  /** `query`: `{x, y, label}`; `reference`: `{y, label}` on the same x, or null. */
  show(query, reference = null) {
    const keepZoom = this.u && this.query && this.query.key === query.key ? this.zoom() : null;
    this.query = query;
    this.reference = reference;
    this.u?.destroy();
    const series = [
      { label: "cm⁻¹", value: (u, v) => (v == null ? "–" : v.toFixed(1)) },
      { label: query.label, stroke: QUERY_COLOR, width: 1.6, value: (u, v) => (v == null ? "–" : v.toFixed(3)) },
    ];
    const data = [query.x, query.y];
    if (reference) {
      series.push({ label: reference.label, stroke: REFERENCE_COLOR, width: 1.6, dash: [7, 4],
        value: (u, v) => (v == null ? "–" : v.toFixed(3)) });
      data.push(reference.y);
    }
    const opts = {
      width: Math.max(200, this.container.clientWidth),
      height: plotHeight(),
      scales: { x: { time: false }, y: { range: (u, min, max) => [Math.min(0, min) - 0.03, Math.max(1, max) + 0.05] } },
      axes: [
        { ...AXIS, label: "Raman shift (cm⁻¹)", labelSize: 24 },
        { ...AXIS, label: "Intensity (scaled 0–1)", labelSize: 24, size: 50 },
      ],
      series,
      cursor: { drag: { x: true, y: false, setScale: true }, points: { size: 6 } },
      legend: { live: true },
      hooks: { setScale: [(u, key) => key === "x" && this.onZoomChange(this.isZoomed())] },
      plugins: [navigation()],
    };
    this.u = new uPlot(opts, data, this.container);
    this.container.dataset.series = String(series.length - 1);
    this.container.dataset.reference = reference ? reference.label : "";
    if (keepZoom) this.u.setScale("x", keepZoom);
    this.onZoomChange(this.isZoomed());
  }

  zoom() {
    return { min: this.u.scales.x.min, max: this.u.scales.x.max };
  }

  isZoomed() {
    if (!this.u) return false;
    const [lo, hi] = xRange(this.u);
    const { min, max } = this.u.scales.x;
    return min > lo + 1e-9 || max < hi - 1e-9;
  }

  resetZoom() {
    if (!this.u) return;
    const [lo, hi] = xRange(this.u);
    this.u.setScale("x", { min: lo, max: hi });
  }

  resize() {
    if (this.u) this.u.setSize({ width: Math.max(200, this.container.clientWidth), height: plotHeight() });
  }

  clear() {
    this.u?.destroy();
    this.u = null;
    this.query = null;
    this.reference = null;
    this.container.dataset.series = "0";
    this.container.dataset.reference = "";
  }
}

/** A small, non-interactive plot of one spectrum inside a result card. */
export function sparkline(container, x, y) {
  const opts = {
    width: Math.max(120, container.clientWidth || 300),
    height: 64,
    padding: [4, 2, 2, 2],
    scales: { x: { time: false }, y: { range: [-0.02, 1.04] } },
    axes: [{ show: false }, { show: false }],
    series: [{}, { stroke: QUERY_COLOR, width: 1.2, fill: "rgba(29, 78, 216, 0.08)" }],
    cursor: { show: false },
    legend: { show: false },
    select: { show: false },
  };
  const u = new uPlot(opts, [x, y], container);
  new ResizeObserver(() => {
    if (container.clientWidth) u.setSize({ width: container.clientWidth, height: 64 });
  }).observe(container);
  return u;
}
