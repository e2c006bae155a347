// GID and AH leases: stable per name, kept across restarts in the state file, written
// atomically, and never silently lost when the file is damaged.
import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DaemonClient } from '../src/control/client';
import { startDaemon, type DaemonServer } from '../src/control/server';
import { StateStore, parseStateFile, type StateFile } from '../src/control/state-store';
import { GID_PREFIX, gidDeviceIndex, gidFabricId, parseGid } from '../src/common/gid';
import { MAX_AHN } from '../src/control/protocol';

interface HasTeardown {
  teardown(fn: () => unknown): void;
}

/**
 * A fresh directory under the OS temp dir, holding `files` (name -> content; a nested object
 * is a subdirectory), removed at teardown. Not tap's testdir: its fixture path is derived
 * from the test name, so two runs of this file at once would share it.
 */
function tempdir(t: HasTeardown, files: Record<string, unknown> = {}): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-daemon-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const fill = (at: string, entries: Record<string, unknown>): void => {
    for (const [name, v] of Object.entries(entries)) {
      const p = path.join(at, name);
      if (typeof v === 'string') fs.writeFileSync(p, v);
      else {
        fs.mkdirSync(p);
        fill(p, v as Record<string, unknown>);
      }
    }
  };
  fill(dir, files);
  return dir;
}

async function daemon(t: HasTeardown, statePath: string | null = null): Promise<DaemonServer> {
  const d = await startDaemon({ statePath, heartbeatTimeoutMs: 5000 });
  t.teardown(() => d.close());
  return d;
}

async function client(t: HasTeardown, d: DaemonServer): Promise<DaemonClient> {
  const c = await DaemonClient.connect({ host: d.host, port: d.port, reconnect: false });
  t.teardown(() => c.close());
  return c;
}

const ep = (port: number) => ({ host: '127.0.0.1', port });

t.test('register gives a GID in the fe80:: layout, stable per name', async (t) => {
  const d = await daemon(t);
  const a = await client(t, d);
  const reg = await a.register({ name: 'rank0', endpoint: ep(4000), rank: 0 });
  t.same(reg, { gid: reg.gid, ahn: 1, fabricId: d.fabricId, deviceIndex: 1 });
  const bytes = parseGid(reg.gid);
  t.equal((bytes[0] << 8) | bytes[1], GID_PREFIX, 'fe80 prefix');
  t.same([...bytes.subarray(2, 8)], [0, 0, 0, 0, 0, 0], 'reserved bytes are zero');
  t.equal(gidFabricId(bytes), d.fabricId, 'bytes 8..11 are the fabric id');
  t.equal(gidDeviceIndex(bytes), 1, 'bytes 12..15 are the device index');
  t.match(reg.gid, /^fe80::/);

  // The same name from another connection, after a clean leave, gets the same lease.
  await a.unregister();
  const b = await client(t, d);
  const again = await b.register({ name: 'rank0', endpoint: ep(4001), rank: 0 });
  t.same(again, reg, 'same name -> same GID and AH number');

  const c = await client(t, d);
  const other = await c.register({ name: 'rank1', endpoint: ep(4002), rank: 1 });
  t.not(other.gid, reg.gid, 'a different name gets a different GID');
  t.equal(other.ahn, 2);
  t.equal(other.deviceIndex, 2);
  t.equal(d.stats.leasesCreated, 2);
});

t.test('restart with the same state file keeps fabric, GIDs and AH numbers', async (t) => {
  const dir = tempdir(t);
  const file = path.join(dir, 'state.json');
  const first = await startDaemon({ statePath: file });
  t.teardown(() => first.close());
  const names = ['a', 'b', '__proto__', 'constructor'];
  const leases = [];
  for (const name of names) {
    const c = await DaemonClient.connect({ host: first.host, port: first.port, reconnect: false });
    t.teardown(() => c.close());
    leases.push(await c.register({ name, endpoint: ep(5000) }));
    await c.close();
  }
  await first.close();

  const doc = JSON.parse(fs.readFileSync(file, 'utf8')) as StateFile;
  t.equal(doc.version, 1);
  t.equal(doc.fabricId, first.fabricId);
  t.equal(doc.nextDeviceIndex, 5);
  t.equal(doc.nextAhn, 5);
  t.same(Object.keys(doc.devices).sort(), [...names].sort(), '"__proto__" is stored as a device');
  t.same(fs.readdirSync(dir), ['state.json'], 'no temporary file left behind');

  const second = await daemon(t, file);
  t.equal(second.fabricId, first.fabricId);
  for (let i = names.length - 1; i >= 0; i--) {
    const c = await client(t, second);
    t.same(await c.register({ name: names[i], endpoint: ep(6000 + i) }), leases[i], `${names[i]} keeps its lease`);
  }
  const fresh = await client(t, second);
  t.match(await fresh.register({ name: 'e', endpoint: ep(7000) }), { ahn: 5, deviceIndex: 5 }, 'new names continue the sequence');
  t.same(fs.readdirSync(dir), ['state.json']);
});

t.test('a missing state file is created at start', async (t) => {
  const dir = tempdir(t);
  const file = path.join(dir, 'fresh.json');
  const d = await daemon(t, file);
  const doc = JSON.parse(fs.readFileSync(file, 'utf8')) as StateFile;
  t.same(doc, { version: 1, fabricId: d.fabricId, nextDeviceIndex: 1, nextAhn: 1, devices: {} });
  t.ok(d.fabricId > 0 && d.fabricId <= 0xffffffff);
});

t.test('a state file the daemon cannot trust stops it with ESTATE naming the file', async (t) => {
  const good = { version: 1, fabricId: 7, nextDeviceIndex: 3, nextAhn: 3, devices: { a: { deviceIndex: 1, ahn: 1 }, b: { deviceIndex: 2, ahn: 2 } } };
  const cases: Record<string, string> = {
    'truncated.json': JSON.stringify(good).slice(0, 40),
    'empty.json': '',
    'array.json': '[]',
    'version.json': JSON.stringify({ ...good, version: 2 }),
    'fabric.json': JSON.stringify({ ...good, fabricId: -1 }),
    'dup-ahn.json': JSON.stringify({ ...good, devices: { a: { deviceIndex: 1, ahn: 1 }, b: { deviceIndex: 2, ahn: 1 } } }),
    'dup-index.json': JSON.stringify({ ...good, devices: { a: { deviceIndex: 1, ahn: 1 }, b: { deviceIndex: 1, ahn: 2 } } }),
    'ahead.json': JSON.stringify({ ...good, nextAhn: 2 }),
    'badname.json': JSON.stringify({ ...good, devices: { 'a b': { deviceIndex: 1, ahn: 1 } } }),
    'ahn-range.json': JSON.stringify({ ...good, nextAhn: 0x10001, devices: { a: { deviceIndex: 1, ahn: 0xffff } } }),
  };
  const dir = tempdir(t, cases);
  for (const [name, text] of Object.entries(cases)) {
    const file = path.join(dir, name);
    await t.rejects(startDaemon({ statePath: file }), { name: 'DaemonError', code: 'ESTATE', message: new RegExp(name.replace('.', '\\.')) }, name);
    t.equal(fs.readFileSync(file, 'utf8'), text, `${name} left untouched`);
  }
  t.throws(() => parseStateFile('{', '/x/y.json'), { code: 'ESTATE', message: /\/x\/y\.json/ });
  t.same(parseStateFile(JSON.stringify(good), 'g'), good);
});

t.test('a state path in a missing directory fails at start with ESTATE', async (t) => {
  const dir = tempdir(t);
  await t.rejects(startDaemon({ statePath: path.join(dir, 'no', 'such', 'dir', 's.json') }), { code: 'ESTATE' });
});

t.test('AH numbers are 16-bit with 0xFFFF reserved: exhaustion -> ENOSPC', async (t) => {
  const doc: StateFile = { version: 1, fabricId: 9, nextDeviceIndex: MAX_AHN, nextAhn: MAX_AHN, devices: { old: { deviceIndex: 1, ahn: 1 } } };
  const dir = tempdir(t, { 'state.json': JSON.stringify(doc) });
  const d = await daemon(t, path.join(dir, 'state.json'));
  const a = await client(t, d);
  t.match(await a.register({ name: 'last', endpoint: ep(1) }), { ahn: 0xfffe }, 'the last AH number is 0xFFFE');
  const b = await client(t, d);
  await t.rejects(b.register({ name: 'one-too-many', endpoint: ep(2) }), { name: 'DaemonError', code: 'ENOSPC' });
  t.match(await b.register({ name: 'old', endpoint: ep(3) }), { ahn: 1 }, 'known names still register');
  t.same(fs.readdirSync(dir), ['state.json']);
});

t.test('state store: leases are unique under concurrency and saved atomically', async (t) => {
  const dir = tempdir(t);
  const file = path.join(dir, 's.json');
  const store = await StateStore.open(file, { fabricId: 0x1a2b3c4d });
  t.equal(store.fabricId, 0x1a2b3c4d);
  t.notOk(store.needsSave);
  const leases = Array.from({ length: 50 }, (_, i) => store.lease(`n${i}`));
  t.equal(new Set(leases.map((l) => l.ahn)).size, 50);
  t.equal(store.lease('n3'), leases[3], 'leasing again returns the same lease');
  t.ok(store.needsSave);
  // Many saves in flight at once: serialized, each complete, none leaves a tmp file.
  await Promise.all(Array.from({ length: 10 }, () => store.save()));
  t.notOk(store.needsSave);
  t.same(fs.readdirSync(dir), ['s.json']);
  const reopened = await StateStore.open(file);
  t.equal(reopened.size, 50);
  t.same(reopened.get('n49'), leases[49]);

  const mem = await StateStore.open(null);
  mem.lease('x');
  t.notOk(mem.needsSave, 'an in-memory store never needs saving');
  await mem.save();
  t.equal(mem.path, null);
});

t.test('state store: a failed save keeps the lease and the next save retries it', async (t) => {
  const dir = tempdir(t, { sub: {} });
  const file = path.join(dir, 'sub', 's.json');
  const store = await StateStore.open(file);
  store.lease('a');
  fs.rmSync(path.join(dir, 'sub'), { recursive: true });
  await t.rejects(store.save(), { code: 'ENOENT' });
  t.ok(store.needsSave);
  fs.mkdirSync(path.join(dir, 'sub'));
  await store.save();
  t.notOk(store.needsSave);
  t.same((JSON.parse(fs.readFileSync(file, 'utf8')) as StateFile).devices, { a: { deviceIndex: 1, ahn: 1 } });
});

t.test('register replies EIO when the lease cannot be persisted', async (t) => {
  const dir = tempdir(t, { sub: {} });
  const file = path.join(dir, 'sub', 's.json');
  const d = await daemon(t, file);
  const a = await client(t, d);
  fs.rmSync(path.join(dir, 'sub'), { recursive: true });
  await t.rejects(a.register({ name: 'x', endpoint: ep(1) }), { code: 'EIO', message: /s\.json/ });
  fs.mkdirSync(path.join(dir, 'sub'));
  t.match(await a.register({ name: 'x', endpoint: ep(1) }), { ahn: 1 }, 'a retry persists and succeeds');
  t.ok(fs.existsSync(file));
});
