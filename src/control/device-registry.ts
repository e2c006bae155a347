/**
 * The daemon's membership: devices by name and by GID, their leases (through the state
 * store), who owns each, and whether each is up. A device is up from its registration
 * until it unregisters, its connection closes, or no heartbeat came for
 * `heartbeatTimeoutMs`; every change is announced as a peer_up / peer_down event.
 *
 * It owns no socket: connections are {@link DeviceOwner}s and events leave through the
 * {@link Announce} function the daemon gives it.
 */
import { DaemonError } from '../common/errors';
import { formatGid, makeGid } from '../common/gid';
import type { Logger } from '../common/logger';
import { every, type Clock, type Repeating } from './clock';
import type { DaemonStats } from './daemon-stats';
import type { DaemonEvent, DeviceRecord, Endpoint, ListResult, RegisterResult } from './protocol';
import type { RegisterRequest } from './request-args';
import type { Lease, StateStore } from './state-store';

/** A connection as the registry sees it: it owns at most one device. */
export interface DeviceOwner {
  /** For logs. */
  readonly id: number;
  readonly closed: boolean;
  /** The device this connection registered; the registry sets and clears it. */
  device: Device | null;
}

/** Sends `event` to every connection with a device, except `except`. */
export type Announce = (event: DaemonEvent, except: DeviceOwner | null) => void;

/** A device registered since this daemon started. Kept after it goes down: names are leased forever. */
export class Device {
  readonly name: string;
  readonly gid: string;
  readonly ahn: number;
  readonly deviceIndex: number;
  endpoint: Endpoint;
  rank: number | null;
  incarnation = 0;
  up = false;
  owner: DeviceOwner | null = null;
  /** Clock time of the last register or heartbeat. */
  lastSeen = 0;
  stats: Record<string, number> | null = null;

  constructor(name: string, gid: string, ahn: number, deviceIndex: number, endpoint: Endpoint, rank: number | null) {
    this.name = name;
    this.gid = gid;
    this.ahn = ahn;
    this.deviceIndex = deviceIndex;
    this.endpoint = endpoint;
    this.rank = rank;
  }

  record(now: number): DeviceRecord {
    return {
      name: this.name,
      gid: this.gid,
      ahn: this.ahn,
      rank: this.rank,
      endpoint: { host: this.endpoint.host, port: this.endpoint.port },
      incarnation: this.incarnation,
      up: this.up,
      lastSeenMsAgo: Math.max(0, Math.round(now - this.lastSeen)),
      stats: this.stats,
    };
  }
}

/** What a {@link DeviceRegistry} is built with. */
export interface DeviceRegistryOptions {
  store: StateStore;
  stats: DaemonStats;
  log: Logger;
  clock: Clock;
  heartbeatTimeoutMs: number;
  maxDevices: number;
  announce: Announce;
}

/** Devices, leases and heartbeat deadlines. */
export class DeviceRegistry {
  readonly heartbeatTimeoutMs: number;
  readonly maxDevices: number;
  private readonly store: StateStore;
  private readonly stats: DaemonStats;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly announce: Announce;
  private readonly devices = new Map<string, Device>();
  private readonly byGid = new Map<string, Device>();
  private sweeper: Repeating | null = null;

  constructor(opts: DeviceRegistryOptions) {
    this.store = opts.store;
    this.stats = opts.stats;
    this.log = opts.log;
    this.clock = opts.clock;
    this.heartbeatTimeoutMs = opts.heartbeatTimeoutMs;
    this.maxDevices = opts.maxDevices;
    this.announce = opts.announce;
  }

  /** How often heartbeat deadlines are checked. */
  get sweepPeriodMs(): number {
    // One ticking timer scans all devices, rather than a timer per device. Scanning at a
    // quarter of the deadline bounds detection latency to 1.25x the deadline.
    return Math.max(10, Math.min(1000, Math.floor(this.heartbeatTimeoutMs / 4)));
  }

  /** Starts checking heartbeat deadlines. */
  startExpiry(): void {
    if (this.sweeper) return;
    this.sweeper = every(this.clock, this.sweepPeriodMs, () => this.sweep(), { unref: true });
  }

  /** Stops checking heartbeat deadlines. */
  stopExpiry(): void {
    this.sweeper?.cancel();
    this.sweeper = null;
  }

  /**
   * Registers `owner`'s device. A known name completes synchronously, so replies keep
   * request order; a new name resolves once its lease is on disk.
   */
  register(owner: DeviceOwner, req: RegisterRequest): RegisterResult | Promise<RegisterResult> {
    const { name } = req;
    this.checkRegister(owner, name);
    if (this.store.get(name) === undefined && this.store.size >= this.maxDevices) {
      throw new DaemonError('ENOSPC', `daemon device limit reached: maxDevices=${this.maxDevices} names are leased; cannot lease ${name} (known names still register)`);
    }
    const lease = this.store.lease(name);
    // A new name is only announced once its lease is on disk: a GID handed out must survive a crash.
    if (!this.store.needsSave) return this.completeRegister(owner, lease, req);
    return this.store.save().then(
      () => {
        // Nobody to answer; the lease is kept and the device stays down.
        if (owner.closed) return {} as RegisterResult;
        // Checked again: another registration may have run while the lease was written.
        this.checkRegister(owner, name);
        return this.completeRegister(owner, lease, req);
      },
      (err: Error) => {
        this.log.error({ err, statePath: this.store.path }, 'cannot persist a new lease');
        throw new DaemonError('EIO', `daemon cannot persist the lease of ${name} to ${this.store.path}: ${err.message}`, { cause: err });
      },
    );
  }

  private completeRegister(owner: DeviceOwner, lease: Lease, req: RegisterRequest): RegisterResult {
    const { name, endpoint, rank, incarnation } = req;
    let dev = this.devices.get(name);
    if (!dev) {
      const gid = formatGid(makeGid(this.store.fabricId, lease.deviceIndex));
      dev = new Device(name, gid, lease.ahn, lease.deviceIndex, endpoint, rank);
      this.devices.set(name, dev);
      this.byGid.set(gid, dev);
      this.stats.leasesCreated++;
    }
    const previous = dev.owner;
    if (previous && previous !== owner) {
      // Taking over a device whose owner is alive but silent: the old connection loses it
      // and learns so (ENODEV) at its next heartbeat.
      previous.device = null;
    }
    dev.owner = owner;
    dev.endpoint = endpoint;
    dev.rank = rank;
    dev.incarnation = incarnation;
    dev.up = true;
    dev.lastSeen = this.clock.now();
    dev.stats = null;
    owner.device = dev;
    this.stats.registrations++;
    this.log.info({ name, gid: dev.gid, ahn: dev.ahn, endpoint, rank, conn: owner.id }, 'device registered');
    this.announce({ event: 'peer_up', name, gid: dev.gid, endpoint: { ...endpoint }, incarnation }, owner);
    return {
      gid: dev.gid,
      ahn: dev.ahn,
      fabricId: this.store.fabricId,
      deviceIndex: dev.deviceIndex,
      heartbeatTimeoutMs: this.heartbeatTimeoutMs,
    };
  }

  private checkRegister(owner: DeviceOwner, name: string): void {
    if (owner.device) {
      throw new DaemonError('EALREADY', `this connection already registered device ${owner.device.name}; unregister it first`);
    }
    const dev = this.devices.get(name);
    if (dev && dev.up && dev.owner && dev.owner !== owner && !dev.owner.closed) {
      throw new DaemonError('EADDRINUSE', `device name ${name} is up and owned by another connection`);
    }
  }

  /** A clean leave; `stats` are the device's last counters. Nothing to do without a device. */
  unregister(owner: DeviceOwner, stats: Record<string, number> | undefined): void {
    const dev = owner.device;
    if (!dev) return;
    owner.device = null;
    if (dev.owner !== owner) return;
    dev.owner = null;
    if (stats) dev.stats = stats;
    if (dev.up) {
      dev.up = false;
      this.log.info({ name: dev.name, gid: dev.gid }, 'device down: unregistered');
      this.announce({ event: 'peer_down', name: dev.name, gid: dev.gid }, owner);
    }
  }

  /** Renews `owner`'s device; a device declared down comes back up. `ENODEV` when it owns none. */
  heartbeat(owner: DeviceOwner, stats: Record<string, number> | undefined): void {
    const dev = owner.device;
    if (!dev || dev.owner !== owner) {
      throw new DaemonError('ENODEV', 'no device is registered on this connection (never registered, unregistered, or taken over after a missed heartbeat)');
    }
    this.stats.heartbeats++;
    dev.lastSeen = this.clock.now();
    if (stats) dev.stats = stats;
    if (!dev.up) {
      dev.up = true;
      this.log.info({ name: dev.name, gid: dev.gid }, 'device up again: heartbeat resumed');
      this.announce({ event: 'peer_up', name: dev.name, gid: dev.gid, endpoint: { ...dev.endpoint }, incarnation: dev.incarnation }, owner);
    }
  }

  /** The device with GID `gid` (canonical text). `ENOENT` when none registered. */
  resolve(gid: string): DeviceRecord {
    const dev = this.byGid.get(gid);
    if (!dev) throw new DaemonError('ENOENT', `no device with GID ${gid} has registered with this daemon`);
    return dev.record(this.clock.now());
  }

  /** Every device, up or down, by device index. */
  list(): ListResult {
    const now = this.clock.now();
    const devices = [...this.devices.values()].sort((a, b) => a.deviceIndex - b.deviceIndex).map((d) => d.record(now));
    return { fabricId: this.store.fabricId, devices };
  }

  /**
   * `owner`'s connection closed: its device goes down, announced unless `announce` is false
   * (the daemon itself is closing).
   */
  ownerGone(owner: DeviceOwner, announce: boolean): void {
    const dev = owner.device;
    owner.device = null;
    if (!dev || dev.owner !== owner) return;
    dev.owner = null;
    if (!dev.up) return;
    dev.up = false;
    this.log.info({ name: dev.name, gid: dev.gid }, 'device down: connection closed');
    if (announce) this.announce({ event: 'peer_down', name: dev.name, gid: dev.gid }, null);
  }

  /** Declares down every device whose deadline has passed. */
  sweep(): void {
    const now = this.clock.now();
    for (const dev of this.devices.values()) {
      if (!dev.up || now - dev.lastSeen <= this.heartbeatTimeoutMs) continue;
      dev.up = false;
      this.stats.heartbeatTimeouts++;
      this.log.warn({ name: dev.name, gid: dev.gid, silentMs: Math.round(now - dev.lastSeen) }, 'device down: heartbeat missed');
      this.announce({ event: 'peer_down', name: dev.name, gid: dev.gid }, dev.owner);
    }
  }
}
