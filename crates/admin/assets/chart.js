// Inline SVG line charts over a sliding time window. No library: a chart is an SVG with a
// grid, one <path> per series and an HTML legend with the latest values.

import { h, replace } from './dom.js';

const W = 560;
const H = 170;
const PAD = { left: 48, right: 10, top: 10, bottom: 22 };

/**
 * lineChart({ id, title, unit, series: ['ingress', 'egress'] }) → { node, draw(data, now, windowMs) }
 * where data[i] is series i as [{ t: ms, v: number|null }] (null leaves a gap).
 */
export function lineChart({ id, title, unit, series }) {
  const svg = h('svg', {
    viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': `${title} (${unit})`,
  });
  const legend = h('div', { class: 'legend' });
  const node = h('figure', { class: 'chart-card', id },
    h('figcaption', {}, h('span', { class: 'chart-title' }, title), legend),
    svg);

  const draw = (data, now, windowMs) => {
    const values = data.flat().map((p) => p.v).filter((v) => v !== null);
    const max = niceCeil(Math.max(0, ...values));
    const x = (t) => PAD.left + ((t - (now - windowMs)) / windowMs) * (W - PAD.left - PAD.right);
    const y = (v) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
    replace(svg,
      grid(max, y, unit),
      timeAxis(now, windowMs, x),
      data.map((points, i) => h('path', { class: `series series-${i}`, d: pathOf(points, x, y) },
        h('title', {}, series[i]))),
      values.length ? null
        : h('text', { x: W / 2, y: H / 2, class: 'empty', 'text-anchor': 'middle' }, 'collecting samples…'));
    replace(legend, series.map((name, i) => {
      const last = [...data[i]].reverse().find((p) => p.v !== null);
      return h('span', { class: 'legend-item' },
        h('span', { class: `swatch series-${i}` }), `${name} `,
        h('strong', {}, last ? format(last.v) : '—'), ` ${unit}`);
    }));
  };
  draw(series.map(() => []), Date.now(), 60000);
  return { node, draw };
}

/** "M x y L x y …", starting a new sub-path after each gap. */
function pathOf(points, x, y) {
  let d = '';
  let pen = 'M';
  for (const p of points) {
    if (p.v === null || p.v === undefined) {
      pen = 'M';
      continue;
    }
    d += `${pen}${x(p.t).toFixed(1)} ${y(p.v).toFixed(1)} `;
    pen = 'L';
  }
  return d.trim();
}

function grid(max, y, unit) {
  return [0, max / 2, max].map((v) => h('g', { class: 'grid' },
    h('line', { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
    h('text', { x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, format(v)),
    v === max ? h('title', {}, unit) : null));
}

function timeAxis(now, windowMs, x) {
  const step = windowMs <= 90_000 ? 15_000 : windowMs <= 180_000 ? 30_000 : 60_000;
  const ticks = [];
  for (let back = 0; back <= windowMs; back += step) {
    ticks.push(h('text', {
      x: x(now - back), y: H - 6, class: 'axis', 'text-anchor': back === 0 ? 'end' : 'middle',
    }, back === 0 ? 'now' : `−${ago(back / 1000)}`));
  }
  return h('g', {}, ticks);
}

function ago(s) {
  if (s < 60) return `${s}s`;
  return s % 60 ? `${Math.floor(s / 60)}m${s % 60}s` : `${s / 60}m`;
}

/** The smallest of 1, 2, 2.5, 5 × 10^k at or above v (at least 1). */
function niceCeil(v) {
  if (v <= 1) return 1;
  const exp = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * exp >= v) return m * exp;
  return 10 * exp;
}

export function format(v) {
  if (v === 0) return '0';
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}
