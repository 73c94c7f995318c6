// Preview of a spectrum on the model grid, for plotting only.
//
// The service decides what the model sees; when its answer carries the model input
// (`result.spectrum`), that is plotted. Otherwise text files (RRUFF, two columns) are read here
// with the service's documented policy: finite rows, ascending axis, duplicates averaged, linear
// interpolation inside the measured range, zero outside, min-max scaling over measured points.

/** `{x, y}` from two-column text; lines that do not start with two numbers are skipped. */
export function parseColumns(text) {
  const x = [];
  const y = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const parts = line.split(/[\s,;]+/).filter(Boolean);
    if (parts.length < 2) continue;
    const a = Number(parts[0]);
    const b = Number(parts[1]);
    if (Number.isFinite(a) && Number.isFinite(b)) {
      x.push(a);
      y.push(b);
    }
  }
  return x.length >= 2 ? { x, y } : null;
}

/** Sorted, de-duplicated (mean of repeats) copy of a spectrum. */
function clean({ x, y }) {
  const order = x.map((_, i) => i).sort((i, j) => x[i] - x[j]);
  const xs = [];
  const ys = [];
  for (const i of order) {
    const last = xs.length - 1;
    if (last >= 0 && x[i] === xs[last]) {
      ys[last].push(y[i]);
    } else {
      xs.push(x[i]);
      ys.push([y[i]]);
    }
  }
  return { x: xs, y: ys.map((v) => v.reduce((s, t) => s + t, 0) / v.length) };
}

/** The grid's axis: `points` values from `start` to `stop`. */
export function gridAxis(grid) {
  const step = (grid.stop - grid.start) / (grid.points - 1);
  return Array.from({ length: grid.points }, (_, i) => grid.start + i * step);
}

/** Resample onto `axis` and min-max scale; returns `{y, measured: [lo, hi], coverage}`. */
export function resample(spectrum, axis) {
  const { x, y } = clean(spectrum);
  const lo = x[0];
  const hi = x[x.length - 1];
  const out = new Array(axis.length).fill(0);
  const inside = [];
  let j = 0;
  axis.forEach((g, i) => {
    if (g < lo || g > hi) return;
    while (j < x.length - 2 && x[j + 1] < g) j += 1;
    const t = x[j + 1] === x[j] ? 0 : (g - x[j]) / (x[j + 1] - x[j]);
    out[i] = y[j] + Math.min(Math.max(t, 0), 1) * (y[j + 1] - y[j]);
    inside.push(i);
  });
  if (!inside.length) return null;
  const values = inside.map((i) => out[i]);
  const min = Math.min(...values);
  const span = Math.max(...values) - min;
  for (const i of inside) out[i] = span > 0 ? (out[i] - min) / span : 0;
  return { y: out, measured: [lo, hi], coverage: inside.length / axis.length };
}

/** Scale any array to 0..1 (reference spectra are compared by shape, not height). */
export function minmax(values) {
  const min = Math.min(...values);
  const span = Math.max(...values) - min;
  return values.map((v) => (span > 0 ? (v - min) / span : 0));
}
