/**
 * A registered client's heartbeats: one every period while connected, carrying the
 * device's counters, so the daemon keeps the device up and `list` shows live figures.
 * Heartbeats never hold the process open and never queue up behind a slow daemon.
 */
import type { DaemonError } from '../common/errors';
import type { Logger } from '../common/logger';
import { every, type Clock, type Repeating } from './clock';

/** What the heartbeats run against: the client that owns them. */
export interface HeartbeatHost {
  /** True when a heartbeat should go now: connected, with a device registered. */
  canBeat(): boolean;
  /** Sends one heartbeat request. */
  send(stats: Record<string, number> | undefined): Promise<unknown>;
  /**
   * The daemon answered ENODEV: it no longer has our device. Returns true when a
   * registration was held (and is now dropped), false when there was none to lose.
   */
  deviceLost(): boolean;
}

/** Keeps only the finite numbers of a stats record. */
function finiteOnly(stats: Record<string, number> | null | undefined): Record<string, number> | undefined {
  if (!stats || typeof stats !== 'object') return undefined;
  const out: [string, number][] = [];
  for (const [k, v] of Object.entries(stats)) if (typeof v === 'number' && Number.isFinite(v)) out.push([k, v]);
  return Object.fromEntries(out);
}

/** The heartbeat schedule of one client. */
export class Heartbeater {
  /** Gives the counters sent with each heartbeat; null sends none. */
  statsProvider: (() => Record<string, number>) | null = null;
  /** Time between heartbeats. */
  readonly periodMs: number;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly host: HeartbeatHost;
  private schedule: Repeating | null = null;
  private inFlight = false;

  constructor(clock: Clock, periodMs: number, log: Logger, host: HeartbeatHost) {
    this.clock = clock;
    this.periodMs = periodMs;
    this.log = log;
    this.host = host;
  }

  /** Starts beating (the first one period from now); no-op when running. */
  start(): void {
    if (this.schedule) return;
    this.schedule = every(this.clock, this.periodMs, () => this.beat(), { unref: true });
  }

  /** Stops beating. A heartbeat already sent still completes. */
  stop(): void {
    this.schedule?.cancel();
    this.schedule = null;
  }

  /** The connection is gone, and with it any heartbeat in flight: the next one may go. */
  connectionLost(): void {
    this.inFlight = false;
  }

  /** The provider's counters, finite ones only; undefined when there is none or it throws (logged as `whenThrows`). */
  readStats(whenThrows: string): Record<string, number> | undefined {
    if (!this.statsProvider) return undefined;
    try {
      return finiteOnly(this.statsProvider());
    } catch (err) {
      this.log.warn({ err }, whenThrows);
      return undefined;
    }
  }

  private beat(): void {
    // One at a time: a slow daemon must not collect a queue of heartbeats from us.
    if (!this.host.canBeat() || this.inFlight) return;
    const stats = this.readStats('stats provider threw; heartbeat sent without stats');
    this.inFlight = true;
    this.host.send(stats).then(
      () => {
        this.inFlight = false;
      },
      (err: DaemonError) => {
        this.inFlight = false;
        if (err.code === 'ENOTCONN' || err.code === 'ECLOSED') return;
        // The daemon gave our name to another connection after we missed the deadline.
        // Reclaiming it (here or on reconnect) would fight the new owner, so let it go.
        if (err.code === 'ENODEV' && this.host.deviceLost()) {
          this.stop();
          return;
        }
        this.log.warn({ err }, 'heartbeat failed');
      },
    );
  }
}
