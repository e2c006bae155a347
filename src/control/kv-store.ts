/**
 * The daemon's key/value store and barriers, the out-of-band exchange processes use before
 * their data path is up (like a PMI). `get` of a missing key and `barrier` wait, each with
 * its own deadline on the daemon's clock; the answer goes to the waiting connection through
 * its {@link WaitOwner}, possibly long after the request.
 */
import { DaemonError, InvalidArgumentError } from '../common/errors';
import type { Clock, ClockTimer } from './clock';
import type { DaemonStats } from './daemon-stats';
import type { BarrierRequest, GetRequest, PutRequest } from './request-args';

/** Waits (get, barrier) one connection may hold at once; each owns a timer. */
const MAX_WAITERS_PER_CONNECTION = 4096;
/** Total bytes of keys and values the key/value store holds. */
const MAX_KV_BYTES = 64 * 1024 * 1024;

/** Marks a request whose reply is sent later, when its wait ends. */
export const DEFERRED = Symbol('deferred');

/** A connection as the store sees it: where the answer to a wait goes. */
export interface WaitOwner {
  /** The waits open on this connection; the store adds and removes its own. */
  readonly waits: Set<Wait>;
  /** Sends the ok reply of request `requestId`. */
  answer(requestId: number, result: object): void;
  /** Sends the error reply of request `requestId`. */
  fail(requestId: number, err: DaemonError): void;
}

/** A `get` or `barrier` call waiting for its answer. */
export class Wait {
  readonly owner: WaitOwner;
  readonly requestId: number;
  readonly kind: 'get' | 'barrier';
  /** Key (get) or barrier name. */
  readonly key: string;
  timer: ClockTimer | null = null;

  constructor(owner: WaitOwner, requestId: number, kind: 'get' | 'barrier', key: string) {
    this.owner = owner;
    this.requestId = requestId;
    this.kind = kind;
    this.key = key;
  }
}

/** The current round of one barrier. */
class BarrierRound {
  readonly n: number;
  readonly members = new Set<Wait>();
  constructor(n: number) {
    this.n = n;
  }
}

/** Keys, values, waiting gets and barrier rounds. */
export class KvStore {
  private readonly clock: Clock;
  private readonly stats: DaemonStats;
  private readonly kv = new Map<string, string>();
  private kvBytes = 0;
  private readonly getWaits = new Map<string, Set<Wait>>();
  private readonly barriers = new Map<string, BarrierRound>();

  constructor(clock: Clock, stats: DaemonStats) {
    this.clock = clock;
    this.stats = stats;
  }

  /** Stores a value and answers every `get` waiting for its key. `ENOSPC` when the store is full. */
  put(req: PutRequest): void {
    const { key, value } = req;
    const bytes = Buffer.byteLength(value, 'utf8');
    const old = this.kv.get(key);
    const delta = bytes + key.length * 2 - (old === undefined ? 0 : Buffer.byteLength(old, 'utf8') + key.length * 2);
    if (this.kvBytes + delta > MAX_KV_BYTES) {
      throw new DaemonError('ENOSPC', `key/value store is full (${MAX_KV_BYTES} bytes)`);
    }
    this.kv.set(key, value);
    this.kvBytes += delta;
    const waiting = this.getWaits.get(key);
    if (!waiting) return;
    this.getWaits.delete(key);
    for (const w of waiting) {
      this.finish(w);
      w.owner.answer(w.requestId, { value });
    }
  }

  /** The value of a key, or {@link DEFERRED}: the answer comes when it is put or the wait times out. */
  get(owner: WaitOwner, requestId: number, req: GetRequest): { value: string } | typeof DEFERRED {
    const { key, timeoutMs } = req;
    const value = this.kv.get(key);
    if (value !== undefined) return { value };
    const w = this.addWait(owner, requestId, 'get', key, timeoutMs, `get ${JSON.stringify(key)}: no value after ${timeoutMs} ms`);
    let set = this.getWaits.get(key);
    if (!set) {
      set = new Set();
      this.getWaits.set(key, set);
    }
    set.add(w);
    return DEFERRED;
  }

  /**
   * Joins the current round of a barrier. A barrier of one passes at once; otherwise the
   * answer comes when the round is full (to every member) or the wait times out.
   */
  barrier(owner: WaitOwner, requestId: number, req: BarrierRequest): object | typeof DEFERRED {
    const { name, n, timeoutMs } = req;
    let round = this.barriers.get(name);
    if (round && round.n !== n) {
      throw new InvalidArgumentError(`barrier: "n" is ${n} but barrier ${JSON.stringify(name)} is gathering ${round.n} callers`);
    }
    if (n === 1) return {};
    if (!round) {
      round = new BarrierRound(n);
      this.barriers.set(name, round);
    }
    const w = this.addWait(owner, requestId, 'barrier', name, timeoutMs, `barrier ${JSON.stringify(name)}: ${n} callers did not arrive within ${timeoutMs} ms`);
    round.members.add(w);
    if (round.members.size >= n) {
      // Release this round; the next caller starts a fresh one (barriers are reusable).
      this.barriers.delete(name);
      for (const m of round.members) {
        this.finish(m);
        m.owner.answer(m.requestId, {});
      }
    }
    return DEFERRED;
  }

  /** `owner`'s connection closed: its waits end unanswered. */
  dropAll(owner: WaitOwner): void {
    for (const w of owner.waits) this.drop(w);
    owner.waits.clear();
  }

  private addWait(owner: WaitOwner, requestId: number, kind: 'get' | 'barrier', key: string, timeoutMs: number, timeoutMessage: string): Wait {
    if (owner.waits.size >= MAX_WAITERS_PER_CONNECTION) {
      throw new DaemonError('EAGAIN', `too many waits on this connection (at most ${MAX_WAITERS_PER_CONNECTION})`);
    }
    const w = new Wait(owner, requestId, kind, key);
    owner.waits.add(w);
    this.stats.waitsOpen++;
    w.timer = this.clock.setTimeout(() => {
      w.timer = null;
      this.drop(w);
      owner.waits.delete(w);
      owner.fail(requestId, new DaemonError('ETIMEDOUT', timeoutMessage));
    }, timeoutMs);
    return w;
  }

  /** A wait got its answer: stop its timer and forget it on its connection. */
  private finish(w: Wait): void {
    this.stats.waitsOpen--;
    if (w.timer) this.clock.clearTimeout(w.timer);
    w.timer = null;
    w.owner.waits.delete(w);
  }

  /** A wait ends without an answer (timeout or closed connection): take it out of its queue. */
  private drop(w: Wait): void {
    this.stats.waitsOpen--;
    if (w.timer) this.clock.clearTimeout(w.timer);
    w.timer = null;
    if (w.kind === 'get') {
      const set = this.getWaits.get(w.key);
      if (set) {
        set.delete(w);
        if (set.size === 0) this.getWaits.delete(w.key);
      }
    } else {
      const round = this.barriers.get(w.key);
      if (round) {
        round.members.delete(w);
        if (round.members.size === 0) this.barriers.delete(w.key);
      }
    }
  }
}
