'use strict';
/*
 * A small SVG line chart for the benchmark matrix: x is the message size on a log2 axis, y a
 * figure on a linear axis from 0, one line per transport. Plain SVG 1.1, no script, no fonts
 * beyond the generic family, so it renders the same in a browser and on GitHub.
 */

const COLORS = { raw: '#555555', 'raw-batched': '#999999', ud: '#1f77b4', srd: '#d62728', rxd: '#2ca02c' };
const DASH = { 'raw-batched': '6 4', rxd: '2 3' };

function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A round step near a tenth of `max`, for the y ticks. */
function niceStep(max) {
  const raw = max / 5;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * p) return m * p;
  return 10 * p;
}

function sizeLabel(b) {
  return b >= 1024 ? `${b / 1024}K` : String(b);
}

/**
 * One panel: `series` maps a transport name to [{x: size, y}] points; returns an SVG <g>
 * placed at (ox, oy), `w` x `h`, with axes, ticks, a legend and a title.
 */
function panel({ title, yLabel, series, ox, oy, w, h }) {
  const names = Object.keys(series).filter((n) => series[n].length > 0);
  const xs = [...new Set(names.flatMap((n) => series[n].map((p) => p.x)))].sort((a, b) => a - b);
  const ymax = Math.max(1e-9, ...names.flatMap((n) => series[n].map((p) => p.y)));
  const step = niceStep(ymax);
  const top = Math.ceil(ymax / step) * step;
  const L = 60;
  const R = 110;
  const T = 30;
  const B = 40;
  const pw = w - L - R;
  const ph = h - T - B;
  const lx = (x) => (xs.length < 2 ? pw / 2 : ((Math.log2(x) - Math.log2(xs[0])) / (Math.log2(xs[xs.length - 1]) - Math.log2(xs[0]))) * pw);
  const ly = (y) => ph - (y / top) * ph;
  const out = [`<g transform="translate(${ox},${oy})">`, `<text x="${w / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>`, `<g transform="translate(${L},${T})">`];
  out.push(`<rect x="0" y="0" width="${pw}" height="${ph}" fill="none" stroke="#cccccc"/>`);
  for (let v = 0; v <= top + step / 2; v += step) {
    const y = ly(v).toFixed(1);
    out.push(`<line x1="0" x2="${pw}" y1="${y}" y2="${y}" stroke="#eeeeee"/>`, `<text x="-6" y="${y}" text-anchor="end" dominant-baseline="middle" font-size="11">${esc(+v.toPrecision(6))}</text>`);
  }
  for (const x of xs) out.push(`<text x="${lx(x).toFixed(1)}" y="${ph + 16}" text-anchor="middle" font-size="11">${esc(sizeLabel(x))}</text>`);
  out.push(`<text x="${pw / 2}" y="${ph + 32}" text-anchor="middle" font-size="11">message size (bytes)</text>`);
  out.push(`<text transform="translate(-46,${ph / 2}) rotate(-90)" text-anchor="middle" font-size="11">${esc(yLabel)}</text>`);
  names.forEach((n, i) => {
    const pts = [...series[n]].sort((a, b) => a.x - b.x);
    const color = COLORS[n] ?? '#000000';
    const dash = DASH[n] ? ` stroke-dasharray="${DASH[n]}"` : '';
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${dash} points="${pts.map((p) => `${lx(p.x).toFixed(1)},${ly(p.y).toFixed(1)}`).join(' ')}"><title>${esc(n)}</title></polyline>`);
    for (const p of pts) out.push(`<circle cx="${lx(p.x).toFixed(1)}" cy="${ly(p.y).toFixed(1)}" r="3" fill="${color}"><title>${esc(`${n} ${p.x} B: ${p.y}`)}</title></circle>`);
    out.push(`<line x1="${pw + 12}" x2="${pw + 36}" y1="${10 + i * 18}" y2="${10 + i * 18}" stroke="${color}" stroke-width="2"${dash}/>`, `<text x="${pw + 40}" y="${10 + i * 18}" dominant-baseline="middle" font-size="11">${esc(n)}</text>`);
  });
  out.push('</g>', '</g>');
  return out.join('\n');
}

/** The whole chart: panels side by side, each 460 x 300, and a caption line under them. */
function chart(panels, caption) {
  const w = 460;
  const h = 300;
  const W = w * panels.length;
  const H = h + 24;
  const body = panels.map((p, i) => panel({ ...p, ox: i * w, oy: 0, w, h }));
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    ...body,
    `<text x="${W / 2}" y="${H - 6}" text-anchor="middle" font-size="11" fill="#444444">${esc(caption)}</text>`,
    '</svg>',
    '',
  ].join('\n');
}

module.exports = { chart, panel, niceStep };
