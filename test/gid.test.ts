// GIDs: the fe80:: layout with fabric id and device index, canonical IPv6 text (longest zero
// run compressed), and strict parsing that names the option it rejects.
import t from 'tap';
import { InvalidArgumentError } from '../src/common/errors';
import {
  formatGid,
  GID_LENGTH,
  gidDeviceIndex,
  gidEquals,
  gidFabricId,
  makeGid,
  parseGid,
} from '../src/common/gid';
import { thrown } from './helpers/memory-fabric';

/** mulberry32: a tiny seeded PRNG, so every run sees the same "random" GIDs. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const bytesOf = (groups: number[]): Uint8Array => {
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
};

t.test('makeGid lays out fe80 prefix, reserved zeros, fabric id, device index', async (t) => {
  const gid = makeGid(0x1a2b3c4d, 7);
  t.equal(gid.length, GID_LENGTH);
  t.same([...gid.subarray(0, 2)], [0xfe, 0x80], 'bytes 0..1 are the fe80 link-local prefix');
  t.same([...gid.subarray(2, 8)], [0, 0, 0, 0, 0, 0], 'bytes 2..7 are reserved zeros');
  t.same([...gid.subarray(8, 12)], [0x1a, 0x2b, 0x3c, 0x4d], 'bytes 8..11 are the fabric id, big-endian');
  t.same([...gid.subarray(12, 16)], [0, 0, 0, 7], 'bytes 12..15 are the device index, big-endian');
  t.equal(gidFabricId(gid), 0x1a2b3c4d);
  t.equal(gidDeviceIndex(gid), 7);
  const big = makeGid(0xffffffff, 0xfffffffe);
  t.equal(gidFabricId(big), 0xffffffff, 'fabric id read back unsigned');
  t.equal(gidDeviceIndex(big), 0xfffffffe, 'device index read back unsigned');
  const framed = new Uint8Array(40);
  framed.set(gid, 20);
  t.equal(gidFabricId(framed, 20), 0x1a2b3c4d, 'reads at an offset');
  t.equal(gidDeviceIndex(framed, 20), 7, 'reads at an offset');
});

t.test('formatGid: canonical text with the fe80:: prefix', async (t) => {
  t.equal(formatGid(makeGid(0x1a2b3c4d, 7)), 'fe80::1a2b:3c4d:0:7', 'the documented example');
  t.equal(formatGid(makeGid(0, 0)), 'fe80::', 'trailing zero run compressed');
  t.equal(formatGid(makeGid(0, 1)), 'fe80::1');
  t.equal(formatGid(makeGid(0xabcd0000, 0x00010002)), 'fe80::abcd:0:1:2', 'a lone zero group is not compressed');
  t.equal(formatGid(new Uint8Array(16)), '::', 'all zeros');
  t.equal(formatGid(bytesOf([0, 0, 0, 0, 0, 0, 0, 1])), '::1', 'leading zero run');
  t.equal(formatGid(bytesOf([1, 0, 0, 1, 0, 0, 0, 1])), '1:0:0:1::1', 'the longest run is the one compressed');
  t.equal(formatGid(bytesOf([1, 0, 0, 1, 0, 0, 1, 1])), '1::1:0:0:1:1', 'equal runs: the first is compressed');
  t.equal(formatGid(bytesOf([1, 2, 3, 4, 5, 6, 7, 8])), '1:2:3:4:5:6:7:8', 'no zero run');
  t.equal(formatGid(bytesOf([0xabcd, 0xef, 0, 0, 0, 0, 0, 0x0a0b])), 'abcd:ef::a0b', 'lower case, no leading zeros');
  const framed = new Uint8Array(36);
  framed.set(makeGid(5, 6), 20);
  t.equal(formatGid(framed, 20), 'fe80::5:0:6', 'formats at an offset');
});

t.test('parseGid/formatGid round trips', async (t) => {
  const rnd = mulberry32(0x61d);
  let bad = 0;
  for (let i = 0; i < 500; i++) {
    // Mix of fabric GIDs and arbitrary bytes with zero runs of random length and place.
    const g = new Uint8Array(16);
    if (i % 2 === 0) g.set(makeGid((rnd() * 2 ** 32) >>> 0, (rnd() * 2 ** 32) >>> 0));
    else for (let k = 0; k < 8; k++) if (rnd() < 0.5) { g[2 * k] = (rnd() * 256) | 0; g[2 * k + 1] = (rnd() * 256) | 0; }
    const text = formatGid(g);
    const back = parseGid(text);
    if (!gidEquals(back, g) || formatGid(back) !== text) bad++;
  }
  t.equal(bad, 0, '500 seeded GIDs survive format -> parse -> format');

  const g = makeGid(0x1a2b3c4d, 7);
  t.ok(gidEquals(parseGid('fe80:0:0:0:1a2b:3c4d:0:7'), g), 'uncompressed form');
  t.ok(gidEquals(parseGid('FE80::1A2B:3C4D:0:7'), g), 'upper case');
  t.ok(gidEquals(parseGid('  fe80::1a2b:3c4d:0:7\n'), g), 'surrounding white space');
  t.ok(gidEquals(parseGid('fe80:0000:0000::1a2b:3c4d:0000:0007'), g), 'leading zeros in groups, partial compression');
  t.ok(gidEquals(parseGid('::'), new Uint8Array(16)), ':: is all zeros');
  t.ok(gidEquals(parseGid('1::'), bytesOf([1, 0, 0, 0, 0, 0, 0, 0])), 'trailing ::');
  t.ok(gidEquals(parseGid('::1'), bytesOf([0, 0, 0, 0, 0, 0, 0, 1])), 'leading ::');
  t.ok(gidEquals(parseGid('1:2:3::5:6:7:8'), bytesOf([1, 2, 3, 0, 5, 6, 7, 8])), ':: standing for one group');

  const copy = parseGid(g);
  t.ok(gidEquals(copy, g), '16 bytes are accepted');
  t.not(copy, g, 'and copied, not aliased');
  copy[15] = 99;
  t.equal(g[15], 7, 'changing the parsed copy leaves the input alone');
  t.ok(gidEquals(parseGid(Buffer.from(g)), g), 'a Buffer is accepted');
});

t.test('gidEquals compares 16 bytes, at an offset', async (t) => {
  const a = makeGid(1, 2);
  t.ok(gidEquals(a, makeGid(1, 2)));
  t.notOk(gidEquals(a, makeGid(1, 3)));
  t.notOk(gidEquals(a, makeGid(2, 2)));
  const framed = new Uint8Array(40);
  framed.set(a, 20);
  t.ok(gidEquals(a, framed, 20));
  t.notOk(gidEquals(a, framed, 19));
});

t.test('parse errors throw InvalidArgumentError (EINVAL) naming the option', async (t) => {
  const cases: Array<[string, unknown]> = [
    ['bad hex digit', 'fe80::zz'],
    ['bad character', 'fe80::1/64'],
    ['group of five digits', 'fe80::12345'],
    ['too many groups', '1:2:3:4:5:6:7:8:9'],
    ['too few groups', '1:2:3:4:5:6:7'],
    ['two ::', '1::2::3'],
    [':: with eight groups', '1:2:3:4:5:6:7::8'],
    ['::: run', 'fe80:::1'],
    ['leading single colon', ':1:2:3:4:5:6:7:8'],
    ['trailing single colon', 'fe80::1:'],
    ['empty group', '1:2::3:4:5:6:7:'],
    ['empty string', ''],
    ['white space only', '   '],
    ['IPv4 dotted tail', '::ffff:1.2.3.4'],
    ['a number', 12345],
    ['null', null],
    ['15 bytes', new Uint8Array(15)],
    ['17 bytes', new Uint8Array(17)],
  ];
  for (const [label, value] of cases) {
    const err = thrown(() => parseGid(value as string, 'opts.peerGid'));
    t.ok(err instanceof InvalidArgumentError, `${label}: InvalidArgumentError`);
    t.equal(err?.code, 'EINVAL', `${label}: code EINVAL`);
    t.match(String(err?.message), /^opts\.peerGid: /, `${label}: the message names the option`);
  }
  t.match(String(thrown(() => parseGid('nope'))?.message), /^gid: "nope" is not a GID/, 'default option name is gid');
});
