/**
 * The daemon's persistent state: the fabric id and the lease of every device name ever
 * registered (device index for the GID, AH number).
 *
 * A lease is forever: the same name gets the same GID and AH number across daemon restarts,
 * which is what lets a running data path survive a restart. So the store never guesses: a
 * file it cannot read or trust stops the daemon with `ESTATE` instead of starting fresh and
 * handing a leased GID to a different name.
 *
 * File layout (JSON, version 1):
 * ```
 * { "version": 1, "fabricId": 439041101, "nextDeviceIndex": 3, "nextAhn": 3,
 *   "devices": { "rank0": { "deviceIndex": 1, "ahn": 1 }, "rank1": { "deviceIndex": 2, "ahn": 2 } } }
 * ```
 * Writes are atomic: a temporary file in the same directory is written, fsynced and renamed
 * over the old one, so a crash leaves either the old or the new file, never half of one.
 */
import { randomInt, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { DaemonError } from '../common/errors';
import { MAX_AHN, isValidDeviceName } from './protocol';

/** The version written into and required from state files. */
export const STATE_VERSION = 1;

/** Largest device index: bytes 12..15 of the GID. */
export const MAX_DEVICE_INDEX = 0xffffffff;

/** One name's lease. */
export interface Lease {
  readonly name: string;
  readonly deviceIndex: number;
  readonly ahn: number;
}

/** The JSON document of a state file. */
export interface StateFile {
  version: 1;
  fabricId: number;
  nextDeviceIndex: number;
  nextAhn: number;
  devices: Record<string, { deviceIndex: number; ahn: number }>;
}

/** Options of {@link StateStore.open}. */
export interface StateStoreOptions {
  /** Fabric id for a fresh state; random (32-bit, non-zero) when not given. Tests pin it. */
  fabricId?: number;
}

function isUint(v: unknown, max: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max;
}

/**
 * Parses and checks a state file's text. Throws DaemonError `ESTATE` naming `file` and the
 * first problem found; accepts nothing that could make two names share a GID or an AH.
 */
export function parseStateFile(text: string, file: string): StateFile {
  const bad = (why: string, cause?: unknown): never => {
    throw new DaemonError('ESTATE', `state file ${file} is not usable (${why}); fix or move it away, the daemon will not overwrite leases it cannot read`, cause === undefined ? undefined : { cause });
  };
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    bad(`not JSON: ${(err as Error).message}`, err);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return bad('not a JSON object');
  const d = doc as Record<string, unknown>;
  if (d.version !== STATE_VERSION) bad(`version is ${JSON.stringify(d.version)}, expected ${STATE_VERSION}`);
  if (!isUint(d.fabricId, 0xffffffff)) bad('fabricId is not a 32-bit unsigned integer');
  // nextX may sit one past the maximum: that is how "exhausted" is recorded.
  if (!isUint(d.nextDeviceIndex, MAX_DEVICE_INDEX + 1) || d.nextDeviceIndex < 1) bad('nextDeviceIndex is not an integer >= 1');
  if (!isUint(d.nextAhn, MAX_AHN + 1) || d.nextAhn < 1) bad(`nextAhn is not an integer in 1..${MAX_AHN + 1}`);
  const devices = d.devices;
  if (typeof devices !== 'object' || devices === null || Array.isArray(devices)) return bad('devices is not an object');
  const nextIndex = d.nextDeviceIndex as number;
  const nextAhn = d.nextAhn as number;
  const seenIndex = new Set<number>();
  const seenAhn = new Set<number>();
  // JSON.parse makes every key, "__proto__" included, an own property: Object.entries is safe.
  for (const [name, lease] of Object.entries(devices)) {
    if (!isValidDeviceName(name)) bad(`device name ${JSON.stringify(name)} is not valid`);
    if (typeof lease !== 'object' || lease === null) bad(`device ${name}: lease is not an object`);
    const { deviceIndex, ahn } = lease as Record<string, unknown>;
    if (!isUint(deviceIndex, MAX_DEVICE_INDEX) || deviceIndex < 1 || deviceIndex >= nextIndex) {
      bad(`device ${name}: deviceIndex must be an integer in 1..nextDeviceIndex-1`);
    }
    if (!isUint(ahn, MAX_AHN) || ahn < 1 || ahn >= nextAhn) bad(`device ${name}: ahn must be an integer in 1..nextAhn-1`);
    if (seenIndex.has(deviceIndex as number)) bad(`device ${name}: deviceIndex ${deviceIndex} is used twice`);
    if (seenAhn.has(ahn as number)) bad(`device ${name}: ahn ${ahn} is used twice`);
    seenIndex.add(deviceIndex as number);
    seenAhn.add(ahn as number);
  }
  return doc as StateFile;
}

/**
 * Leases of device names, in memory and (with a path) on disk.
 *
 * Allocation is synchronous so that concurrent registrations can never get the same number;
 * persistence is a separate, serialized async step the caller awaits before it tells anyone
 * about a new lease.
 */
export class StateStore {
  /** The state file, or null when state lives in memory only. */
  readonly path: string | null;
  /** The fabric id: bytes 8..11 of every GID of this fabric. */
  readonly fabricId: number;
  private readonly leases = new Map<string, Lease>();
  private nextDeviceIndex: number;
  private nextAhn: number;
  // Change counters: a save writes a snapshot of `changes` and records it when durable.
  private changes = 0;
  private saved = 0;
  private writeChain: Promise<void> = Promise.resolve();

  private constructor(file: string | null, state: StateFile) {
    this.path = file;
    this.fabricId = state.fabricId;
    this.nextDeviceIndex = state.nextDeviceIndex;
    this.nextAhn = state.nextAhn;
    for (const [name, l] of Object.entries(state.devices)) {
      this.leases.set(name, Object.freeze({ name, deviceIndex: l.deviceIndex, ahn: l.ahn }));
    }
  }

  /**
   * Loads the state at `file`, or starts a fresh one when the file does not exist (and writes
   * it at once, so an unwritable location fails at start rather than at the first
   * registration). `file` null keeps the state in memory. Throws DaemonError `ESTATE` when the
   * file exists but cannot be read or trusted.
   */
  static async open(file: string | null, opts: StateStoreOptions = {}): Promise<StateStore> {
    const fresh = (): StateFile => ({
      version: STATE_VERSION,
      // Non-zero so a fabric id of 0 can mean "unset" anywhere else.
      fabricId: opts.fabricId ?? randomInt(1, 0x100000000),
      nextDeviceIndex: 1,
      nextAhn: 1,
      devices: {},
    });
    if (file === null) return new StateStore(null, fresh());
    const abs = path.resolve(file);
    let text: string;
    try {
      text = await fsp.readFile(abs, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new DaemonError('ESTATE', `state file ${abs} cannot be read: ${(err as Error).message}`, { cause: err });
      }
      const store = new StateStore(abs, fresh());
      store.changes++;
      try {
        await store.save();
      } catch (e) {
        throw new DaemonError('ESTATE', `state file ${abs} cannot be created: ${(e as Error).message}`, { cause: e });
      }
      return store;
    }
    return new StateStore(abs, parseStateFile(text, abs));
  }

  /** Number of names leased. */
  get size(): number {
    return this.leases.size;
  }

  /** The lease of `name`, if it has one. */
  get(name: string): Lease | undefined {
    return this.leases.get(name);
  }

  /** All leases, in no particular order. */
  all(): IterableIterator<Lease> {
    return this.leases.values();
  }

  /**
   * The lease of `name`, allocating the next device index and AH number when the name is
   * new. Throws DaemonError `ENOSPC` when the numbers are exhausted. A new lease is only in
   * memory until {@link save} resolves: check {@link needsSave}.
   */
  lease(name: string): Lease {
    const existing = this.leases.get(name);
    if (existing) return existing;
    if (this.nextAhn > MAX_AHN) {
      throw new DaemonError('ENOSPC', `no AH number left for device ${name}: all ${MAX_AHN} are leased`);
    }
    if (this.nextDeviceIndex > MAX_DEVICE_INDEX) {
      throw new DaemonError('ENOSPC', `no device index left for device ${name}`);
    }
    const lease = Object.freeze({ name, deviceIndex: this.nextDeviceIndex++, ahn: this.nextAhn++ });
    this.leases.set(name, lease);
    this.changes++;
    return lease;
  }

  /** True when a lease exists that is not yet on disk (always false without a path). */
  get needsSave(): boolean {
    return this.path !== null && this.saved !== this.changes;
  }

  /** The state as the JSON document written to disk. */
  toJSON(): StateFile {
    const devices: [string, { deviceIndex: number; ahn: number }][] = [];
    for (const l of this.leases.values()) devices.push([l.name, { deviceIndex: l.deviceIndex, ahn: l.ahn }]);
    devices.sort((a, b) => a[1].deviceIndex - b[1].deviceIndex);
    return {
      version: STATE_VERSION,
      fabricId: this.fabricId,
      nextDeviceIndex: this.nextDeviceIndex,
      nextAhn: this.nextAhn,
      // fromEntries defines own properties, so a device named "__proto__" is stored as a
      // device, not swallowed as the object's prototype.
      devices: Object.fromEntries(devices),
    };
  }

  /**
   * Writes the current state to disk atomically. Saves are serialized; each writes the
   * latest state, so awaiting any save issued after a lease makes that lease durable.
   * Rejects with the file system error; the unsaved lease stays in memory and the next
   * save retries it.
   */
  save(): Promise<void> {
    if (this.path === null) return Promise.resolve();
    const run = this.writeChain.then(() => this.writeNow());
    this.writeChain = run.catch(() => undefined);
    return run;
  }

  /** Resolves when every save issued so far has finished (successfully or not). */
  flush(): Promise<void> {
    return this.writeChain;
  }

  private async writeNow(): Promise<void> {
    const file = this.path as string;
    const snapshot = this.changes;
    if (snapshot === this.saved) return;
    const text = JSON.stringify(this.toJSON(), null, 2) + '\n';
    const dir = path.dirname(file);
    const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    let handle: fsp.FileHandle | undefined;
    try {
      handle = await fsp.open(tmp, 'wx', 0o600);
      await handle.writeFile(text, 'utf8');
      await handle.sync();
      await handle.close();
      handle = undefined;
      await fsp.rename(tmp, file);
    } catch (err) {
      if (handle) await handle.close().catch(() => undefined);
      await fsp.unlink(tmp).catch(() => undefined);
      throw err;
    }
    // The rename is only durable once the directory entry is; not every platform lets a
    // directory be opened for fsync, and the file content is already safe, so this is
    // best effort.
    try {
      const d = await fsp.open(dir, 'r');
      try {
        await d.sync();
      } finally {
        await d.close();
      }
    } catch {
      /* best effort, see above */
    }
    this.saved = snapshot;
  }
}
