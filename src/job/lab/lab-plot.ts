/*
 * The labs' `--plot FILE.svg`: plain SVG 1.1 (no script, no external fonts, no dependency),
 * panels in a grid of two columns. A panel is a line chart on a linear or log x axis with
 * optional shaded x ranges (the fault window).
 */

/** One line of a panel. */
export interface PlotSeries {
  name: string;
  /** (x, y) points, in x order. */
  points: ReadonlyArray<readonly [number, number]>;
  color?: string;
  /** Line width (default 2). */
  width?: number;
  dash?: string;
}

/** A shaded x range, such as the fault window. */
export interface PlotShade {
  from: number;
  to: number;
  label: string;
}

/** One chart. */
export interface PlotPanel {
  title: string;
  xLabel: string;
  yLabel: string;
  /** Log10 x axis (latencies); the x values must then be > 0. */
  xLog?: boolean;
  /** Top of the y axis; default a round number above the largest value. */
  yMax?: number;
  series: readonly PlotSeries[];
  shades?: readonly PlotShade[];
}

/** Colours of the series, in order, when a series names none. */
export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

const PANEL_W = 560;
const PANEL_H = 320;

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** A round step near a fifth of `max`, for linear ticks. */
export function niceStep(max: number): number {
  const raw = max / 5;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * p) return m * p;
  return 10 * p;
}

function num(x: number): string {
  return String(Number(x.toPrecision(6)));
}

function renderPanel(p: PlotPanel, ox: number, oy: number): string {
  const L = 64;
  const R = 150;
  const T = 30;
  const B = 44;
  const pw = PANEL_W - L - R;
  const ph = PANEL_H - T - B;
  const pts = p.series.flatMap((s) => s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!p.xLog || x > 0)));
  const xsAll = [...pts.map(([x]) => x), ...(p.shades ?? []).flatMap((s) => [s.from, s.to])];
  let xmin = xsAll.length === 0 ? (p.xLog ? 0.01 : 0) : Math.min(...xsAll);
  let xmax = xsAll.length === 0 ? 1 : Math.max(...xsAll);
  if (p.xLog) {
    xmin = 10 ** Math.floor(Math.log10(xmin));
    xmax = 10 ** Math.ceil(Math.log10(xmax));
    if (xmax <= xmin) xmax = xmin * 10;
  } else {
    xmin = Math.min(0, xmin);
    if (xmax <= xmin) xmax = xmin + 1;
  }
  const ymaxData = Math.max(1e-9, ...pts.map(([, y]) => y));
  const ystep = niceStep(p.yMax ?? ymaxData);
  const ytop = p.yMax ?? Math.ceil(ymaxData / ystep) * ystep;
  const lx = (x: number): number =>
    p.xLog ? ((Math.log10(x) - Math.log10(xmin)) / (Math.log10(xmax) - Math.log10(xmin))) * pw : ((x - xmin) / (xmax - xmin)) * pw;
  const ly = (y: number): number => ph - (Math.min(y, ytop) / ytop) * ph;
  const out: string[] = [
    `<g transform="translate(${ox},${oy})">`,
    `<text x="${PANEL_W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${esc(p.title)}</text>`,
    `<g transform="translate(${L},${T})">`,
  ];
  for (const s of p.shades ?? []) {
    const a = lx(Math.max(s.from, xmin));
    const b = lx(Math.min(s.to, xmax));
    out.push(
      `<rect class="fault-window" x="${a.toFixed(1)}" y="0" width="${Math.max(0, b - a).toFixed(1)}" height="${ph}" fill="#f6d5d5"><title>${esc(s.label)}</title></rect>`,
      `<text x="${((a + b) / 2).toFixed(1)}" y="12" text-anchor="middle" font-size="10" fill="#a03030">${esc(s.label)}</text>`,
    );
  }
  out.push(`<rect x="0" y="0" width="${pw}" height="${ph}" fill="none" stroke="#cccccc"/>`);
  for (let v = 0; v <= ytop + ystep / 2; v += ystep) {
    const y = ly(v).toFixed(1);
    out.push(`<line x1="0" x2="${pw}" y1="${y}" y2="${y}" stroke="#eeeeee"/>`, `<text x="-6" y="${y}" text-anchor="end" dominant-baseline="middle" font-size="11">${esc(num(v))}</text>`);
  }
  if (p.xLog) {
    for (let d = xmin; d <= xmax * 1.0001; d *= 10) {
      const x = lx(d).toFixed(1);
      out.push(`<line x1="${x}" x2="${x}" y1="0" y2="${ph}" stroke="#eeeeee"/>`, `<text x="${x}" y="${ph + 16}" text-anchor="middle" font-size="11">${esc(num(d))}</text>`);
    }
  } else {
    const xstep = niceStep(xmax - xmin);
    for (let v = Math.ceil(xmin / xstep) * xstep; v <= xmax + xstep / 1000; v += xstep) {
      out.push(`<text x="${lx(v).toFixed(1)}" y="${ph + 16}" text-anchor="middle" font-size="11">${esc(num(v))}</text>`);
    }
  }
  out.push(`<text x="${pw / 2}" y="${ph + 34}" text-anchor="middle" font-size="11">${esc(p.xLabel)}</text>`);
  out.push(`<text transform="translate(-50,${ph / 2}) rotate(-90)" text-anchor="middle" font-size="11">${esc(p.yLabel)}</text>`);
  p.series.forEach((s, i) => {
    const color = s.color ?? PALETTE[i % PALETTE.length];
    const dash = s.dash !== undefined ? ` stroke-dasharray="${s.dash}"` : '';
    const width = s.width ?? 2;
    const ok = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!p.xLog || x > 0));
    if (ok.length > 0) {
      out.push(
        `<polyline fill="none" stroke="${color}" stroke-width="${width}"${dash} points="${ok.map(([x, y]) => `${lx(x).toFixed(1)},${ly(y).toFixed(1)}`).join(' ')}"><title>${esc(s.name)}</title></polyline>`,
      );
    }
    const ly0 = 10 + i * 16;
    out.push(
      `<line x1="${pw + 12}" x2="${pw + 34}" y1="${ly0}" y2="${ly0}" stroke="${color}" stroke-width="${width}"${dash}/>`,
      `<text x="${pw + 38}" y="${ly0}" dominant-baseline="middle" font-size="11">${esc(s.name)}</text>`,
    );
  });
  out.push('</g>', '</g>');
  return out.join('\n');
}

/** The whole image: panels two per row, a caption under them. */
export function renderSvg(panels: readonly PlotPanel[], caption: string): string {
  const cols = Math.min(2, Math.max(1, panels.length));
  const rows = Math.ceil(panels.length / cols);
  const W = cols * PANEL_W;
  const H = rows * PANEL_H + 24;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    ...panels.map((p, i) => renderPanel(p, (i % cols) * PANEL_W, Math.floor(i / cols) * PANEL_H)),
    `<text x="${W / 2}" y="${H - 8}" text-anchor="middle" font-size="11" fill="#444444">${esc(caption)}</text>`,
    '</svg>',
    '',
  ].join('\n');
}

/**
 * A CDF as a step line for a log x axis: from (first x, 0) up through each (x, fraction).
 * `cdf` is [(x, fraction at or below x)] in x order.
 */
export function cdfSeries(name: string, cdf: ReadonlyArray<readonly [number, number]>, color?: string): PlotSeries {
  const points: Array<[number, number]> = [];
  let prev = 0;
  for (const [x, f] of cdf) {
    points.push([x, prev], [x, f]);
    prev = f;
  }
  return { name, points, color };
}

/** The panel both labs open with: each scenario's post-to-completion latency as a CDF, log x. */
export function latencyCdfPanel(scenarios: ReadonlyArray<{ name: string; cdf: ReadonlyArray<readonly [number, number]> }>): PlotPanel {
  return {
    title: 'Send latency CDF (post to completion)',
    xLabel: 'latency (ms, log scale)',
    yLabel: 'fraction of messages',
    xLog: true,
    yMax: 1,
    series: scenarios.map((s) => cdfSeries(s.name, s.cdf)),
  };
}
