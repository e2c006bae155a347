// The benchmark matrix's chart: one line per transport with its points in size order, x on a
// log2 axis (equal steps for doubling sizes), y from 0 to a round top above the largest value.
import path from 'node:path';
import t from 'tap';

// bench/ is plain JavaScript next to the sources; tests run from dist/test.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { chart, niceStep } = require(path.resolve(__dirname, '..', '..', 'bench', 'svg-chart.js')) as {
  chart: (panels: Array<{ title: string; yLabel: string; series: Record<string, Array<{ x: number; y: number }>> }>, caption: string) => string;
  niceStep: (max: number) => number;
};

t.test('a panel draws each transport as a line through its points, in size order', async (t) => {
  const svg = chart(
    [
      {
        title: 'Rate <a&b>',
        yLabel: 'Mpps',
        series: { raw: [{ x: 4096, y: 3 }, { x: 64, y: 1 }, { x: 1024, y: 2 }], srd: [{ x: 64, y: 0.5 }, { x: 1024, y: 4 }, { x: 4096, y: 8 }], empty: [] },
      },
    ],
    'caption',
  );
  t.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  t.match(svg, /Rate &lt;a&amp;b&gt;/, 'text is escaped');
  const lines = [...svg.matchAll(/<polyline [^>]*points="([^"]+)"><title>([^<]+)<\/title>/g)].map((m) => ({ name: m[2], pts: m[1].split(' ').map((p) => p.split(',').map(Number)) }));
  t.same(lines.map((l) => l.name), ['raw', 'srd'], 'a line per transport with points; none for an empty series');
  const raw = lines[0].pts;
  t.ok(raw[0][0] < raw[1][0] && raw[1][0] < raw[2][0], 'points left to right by size');
  // 64 -> 1024 -> 4096 is 4 doublings then 2: x steps in that proportion.
  t.ok(Math.abs((raw[1][0] - raw[0][0]) / (raw[2][0] - raw[1][0]) - 2) < 0.01, 'x is log2 of the size');
  const srd = lines[1].pts;
  t.ok(srd[2][1] < srd[1][1] && srd[1][1] < srd[0][1], 'larger values higher up (smaller y)');
  t.ok(srd[2][1] >= 0, 'the largest value inside the plot, the top a round number above it');
});

t.test('y ticks step by round numbers', async (t) => {
  t.equal(niceStep(10), 2);
  t.equal(niceStep(0.9), 0.2);
  t.equal(niceStep(120), 25);
  t.equal(niceStep(4), 1);
});
