// Hand-drawn SVG charts (no library: the dashboard works offline and needs no build step).
// A missing value (null) is a gap in the line, never a zero.

import { clock, short } from './format.js';

const SVG = 'http://www.w3.org/2000/svg';
// Okabe-Ito: told apart with the common colour-vision deficiencies, readable on white
export const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#8C564B'];

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** 1, 2, 5 × 10^n: a tick step giving at most `count` ticks up to `max`. */
function niceStep(max, count) {
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

/**
 * Lines over time. `lines`: [{name, color, points: [[timeMs, value|null], …]}]; `from`/`to`: the
 * time range; `label`: what the figure shows, for screen readers.
 */
export function lineChart(container, { lines, from, to, label, unit = '' }) {
  const width = 640, height = 220, left = 48, right = 12, top = 12, bottom = 26;
  const plotW = width - left - right, plotH = height - top - bottom;
  const values = lines.flatMap((l) => l.points.map((p) => p[1]).filter((v) => v !== null));
  const max = Math.max(1e-9, ...values);
  const step = niceStep(max, 4);
  const yMax = Math.max(step, Math.ceil(max / step) * step);
  const x = (t) => left + ((t - from) / (to - from)) * plotW;
  const y = (v) => top + plotH - (v / yMax) * plotH;

  const svg = svgEl('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', class: 'chart-svg' });
  const summary = lines.length
    ? lines.map((l) => {
      const last = [...l.points].reverse().find((p) => p[1] !== null);
      return `${l.name}: latest ${last ? short(last[1], 1) + unit : 'none'}`;
    }).join('; ')
    : 'no data';
  svg.append(svgEl('title', {}, `${label}. ${summary}`));

  for (let v = 0; v <= yMax + 1e-9; v += step) {
    svg.append(svgEl('line', { x1: left, x2: width - right, y1: y(v), y2: y(v), class: 'grid' }));
    svg.append(svgEl('text', { x: left - 6, y: y(v) + 4, class: 'tick', 'text-anchor': 'end' }, short(v, 1)));
  }
  const minute = 60000;
  for (let t = Math.ceil(from / (2 * minute)) * 2 * minute; t <= to; t += 2 * minute) {
    svg.append(svgEl('line', { x1: x(t), x2: x(t), y1: top, y2: top + plotH, class: 'grid' }));
    svg.append(svgEl('text', { x: x(t), y: height - 8, class: 'tick', 'text-anchor': 'middle' }, clock(t).slice(0, 5)));
  }
  svg.append(svgEl('line', { x1: left, x2: width - right, y1: top + plotH, y2: top + plotH, class: 'axis' }));

  for (const line of lines) {
    let d = '';
    const lone = []; // points with no known neighbour: no segment to draw, so a dot
    line.points.forEach(([t, v], i) => {
      if (v === null) return;
      const before = i > 0 && line.points[i - 1][1] !== null;
      const after = i + 1 < line.points.length && line.points[i + 1][1] !== null;
      d += `${before ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      if (!before && !after) lone.push([t, v]);
    });
    const path = svgEl('path', { d, fill: 'none', stroke: line.color, 'stroke-width': 2, 'stroke-linejoin': 'round' });
    path.dataset.service = line.name;
    path.dataset.total = String(line.points.reduce((sum, p) => sum + (p[1] ?? 0), 0));
    svg.append(path);
    for (const [t, v] of lone) svg.append(svgEl('circle', { cx: x(t), cy: y(v), r: 3, fill: line.color }));
  }
  container.replaceChildren(svg);
}

/** A small inline line of one series (values, null = unknown), for a table cell. */
export function sparkline(values, color, label) {
  const width = 120, height = 24;
  const known = values.filter((v) => v !== null);
  const max = Math.max(1, ...known);
  const svg = svgEl('svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', class: 'spark' });
  svg.append(svgEl('title', {}, label));
  let d = '';
  let pen = false;
  values.forEach((v, i) => {
    if (v === null) {
      pen = false;
      return;
    }
    const px = (i / Math.max(1, values.length - 1)) * (width - 2) + 1;
    const py = height - 2 - (v / max) * (height - 4);
    d += `${pen ? 'L' : 'M'}${px.toFixed(1)},${py.toFixed(1)}`;
    pen = true;
  });
  svg.append(svgEl('path', { d, fill: 'none', stroke: color, 'stroke-width': 1.5 }));
  return svg;
}
