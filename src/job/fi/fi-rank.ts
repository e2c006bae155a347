/*
 * One rank of `efa-emu fi-pingpong` / `fi-bw` (started by the command through the launcher,
 * two ranks): rank 0 is fabtests' client, rank 1 its server. They run fabtests' loops
 * (fabtests/benchmarks/benchmark_shared.c) over an RDM endpoint, meet at a barrier before each
 * size as ft_sync does, and the client prints one `{"fi": ...}` JSON line per size and a
 * `{"fiEnd": ...}` line at the end, which the command formats as fabtests prints them.
 *
 * The plan comes as one JSON argument (`--plan`), written by the command.
 */
import { parseArgs } from 'node:util';
import { EfaError, InvalidArgumentError, TimeoutError } from '../../common/errors';
import { openDevice } from '../../open-device';
import { RdmEndpoint, FI_RECV, FI_SEND, FI_TAGGED } from '../../rdm/rdm-endpoint';
import { RdmCqEntry, RdmCqErrEntry } from '../../rdm/rdm-cq';
import { FI_EAGAIN, FI_EAVAIL, fiStrerror, provErrnoStr } from '../../rdm/fi-errno';
import { insertRanks } from '../../rdm/rank-addresses';
import { ACK_BYTES, FI_PROTOCOLS, MAX_WINDOW, type FiProtocol, type FiEndReport, type FiPlan, type FiSizeResult } from './fi-plan';
import { DataCheckError, makePattern, MessageCheck, PATTERN_SLIDE } from './fi-check';

/** Acks carry tags from here on, above every data tag (a data tag is its message's index). */
const ACK_TAG_BASE = 2 ** 52;

/** An operation completed with an error (a `fi_cq_err_entry`). */
export class FiCompletionError extends EfaError {
  constructor(what: string, e: RdmCqErrEntry) {
    super('ECOMPLETION', `${what}: completion error: ${fiStrerror(e.err)} (err ${e.err}, prov_errno ${e.provErrno}: ${provErrnoStr(e.provErrno)})`);
  }
}

/** A receive's context: what it was posted for and into which buffer (the CQ entry says only the context). */
interface RxCtx {
  kind: 'data' | 'ack';
  buf: Buffer;
}

class Rank {
  private readonly out = Array.from({ length: 64 }, () => new RdmCqEntry());
  private readonly err = new RdmCqErrEntry();
  private readonly data: MessageCheck;
  private readonly rxBuf: Buffer;
  private readonly ackBuf = Buffer.alloc(ACK_BYTES);
  private readonly ackRx: RxCtx;
  private readonly txCtx = {};
  private txDone = 0;
  private rxDone = 0;
  private acksIn = 0;
  private size = 0;

  constructor(
    private readonly ep: RdmEndpoint,
    private readonly peer: number,
    private readonly plan: FiPlan,
  ) {
    const max = Math.max(...plan.sizes, ACK_BYTES);
    this.data = new MessageCheck(makePattern(max + PATTERN_SLIDE));
    // Pingpong receives one message at a time; a bw server a window of them, each in its own slice.
    const rxBytes = plan.test === 'bw' ? Math.max(...plan.sizes.map((s, k) => s * plan.windows[k])) : max;
    this.rxBuf = Buffer.alloc(Math.max(rxBytes, 1));
    this.ackRx = { kind: 'ack', buf: this.ackBuf };
  }

  private message(index: number): Buffer {
    return this.data.message(index);
  }

  // ------------------------------------------------------------- completions

  /** Reads completions until `done()`; fails on an error completion or a stall. */
  private async until(done: () => boolean, what: string): Promise<void> {
    let last = performance.now();
    while (!done()) {
      if (await this.poll(what)) last = performance.now();
      else if (performance.now() - last > this.plan.timeoutMs) throw new TimeoutError(`${what}: no completion for ${this.plan.timeoutMs} ms (size ${this.size})`);
    }
  }

  /** One CQ read (spin: then a turn of the event loop when empty; sread: waits a while). True if it got any. */
  private async poll(what: string): Promise<boolean> {
    const cq = this.ep.cq;
    const n = this.plan.comp === 'sread' ? await cq.sread(this.out, this.out.length, Math.min(1000, this.plan.timeoutMs)) : cq.read(this.out, this.out.length);
    if (n > 0) {
      for (let i = 0; i < n; i++) this.onEntry(this.out[i]);
      return true;
    }
    if (n === -FI_EAVAIL) {
      cq.readerr(this.err);
      throw new FiCompletionError(what, this.err);
    }
    if (n !== -FI_EAGAIN) throw new EfaError('EIO', `${what}: fi_cq_read returned ${n}`);
    // Packets reach the device through the event loop: yield to it before polling again.
    if (this.plan.comp === 'spin') await new Promise<void>((r) => setImmediate(r));
    return false;
  }

  private onEntry(e: RdmCqEntry): void {
    if ((e.flags & FI_SEND) !== 0) {
      this.txDone++;
      return;
    }
    if ((e.flags & FI_RECV) === 0) throw new EfaError('EIO', `a completion with neither FI_SEND nor FI_RECV (flags 0x${e.flags.toString(16)})`);
    if (this.plan.tagged && (e.flags & FI_TAGGED) === 0) throw new DataCheckError('a tagged receive completed without FI_TAGGED');
    const ctx = e.opContext as RxCtx;
    if (ctx.kind === 'ack') {
      if (e.len !== ACK_BYTES) throw new DataCheckError(`ack of ${e.len} bytes, expected ${ACK_BYTES}`);
      this.acksIn++;
      return;
    }
    this.rxDone++;
    if (!this.plan.verify) {
      if (e.len !== this.size) throw new DataCheckError(`received ${e.len} bytes for buffer size ${this.size}`);
      return;
    }
    if (e.srcAddr !== this.peer) throw new DataCheckError(`a message from fi_addr ${e.srcAddr}, expected the peer's ${this.peer}`);
    this.data.check(ctx.buf, e.len, this.plan.tagged ? e.tag : null);
  }

  // ------------------------------------------------------------- posting

  /** Posts a send, progressing while the endpoint says -FI_EAGAIN (fabtests' FT_POST). */
  private async send(buf: Buffer, tag: number, what: string): Promise<void> {
    for (;;) {
      const rc = this.plan.tagged ? this.ep.tsend(buf, this.peer, tag, this.txCtx) : this.ep.send(buf, this.peer, this.txCtx);
      if (rc === 0) return;
      if (rc !== -FI_EAGAIN) throw new EfaError('EIO', `${what}: fi_send returned ${rc}`);
      await this.poll(what);
    }
  }

  private async recv(ctx: RxCtx, tag: number, what: string): Promise<void> {
    for (;;) {
      const rc = this.plan.tagged ? this.ep.trecv(ctx.buf, this.peer, tag, 0, ctx) : this.ep.recv(ctx.buf, this.peer, ctx);
      if (rc === 0) return;
      if (rc !== -FI_EAGAIN) throw new EfaError('EIO', `${what}: fi_recv returned ${rc}`);
      await this.poll(what);
    }
  }

  /** A data receive is posted for message `index`: the check will look for it. */
  private expectIndex(index: number): void {
    if (this.plan.verify) this.data.expect(index);
  }

  private dataRx(buf: Buffer): RxCtx {
    return { kind: 'data', buf };
  }

  // ------------------------------------------------------------- the tests

  /** Posts what must be posted before the sync, so no message of the size arrives unexpected. */
  async prepare(k: number, client: boolean): Promise<void> {
    this.size = this.plan.sizes[k];
    this.txDone = this.rxDone = this.acksIn = 0;
    this.data.reset(this.size);
    if (this.plan.test === 'pingpong') {
      // fabtests keeps one receive posted: the client's for pong 0 (index 1), the server's for ping 0.
      const index = client ? 1 : 0;
      this.expectIndex(index);
      await this.recv(this.dataRx(this.rxBuf.subarray(0, this.size)), index, 'post recv');
    } else if (client) {
      await this.recv(this.ackRx, ACK_TAG_BASE, 'post ack recv');
    }
  }

  /** Runs size `k`; resolves with the timed part's elapsed microseconds and the data messages checked. */
  async run(k: number, client: boolean): Promise<{ elapsedUs: number; verified: number }> {
    const p = this.plan;
    const total = p.warmup + p.iters[k];
    let start = process.hrtime.bigint();
    if (p.test === 'pingpong') {
      const rx = this.dataRx(this.rxBuf.subarray(0, this.size));
      for (let i = 0; i < total; i++) {
        if (i === p.warmup) start = process.hrtime.bigint();
        if (client) {
          // ft_tx (post, wait for its completion), then ft_rx (wait, check, repost).
          await this.send(this.message(2 * i), 2 * i, 'ping');
          await this.until(() => this.txDone > i, 'ping send completion');
          await this.until(() => this.rxDone > i, 'pong');
          if (i + 1 < total) {
            this.expectIndex(2 * i + 3);
            await this.recv(rx, 2 * i + 3, 'post recv');
          }
        } else {
          await this.until(() => this.rxDone > i, 'ping');
          if (i + 1 < total) {
            this.expectIndex(2 * i + 2);
            await this.recv(rx, 2 * i + 2, 'post recv');
          }
          await this.send(this.message(2 * i + 1), 2 * i + 1, 'pong');
          await this.until(() => this.txDone > i, 'pong send completion');
        }
      }
    } else {
      const window = p.windows[k];
      const finalAck = Math.floor(total / window) + 1;
      let acks = 0;
      let j = 0;
      if (client) {
        // Posts a window of sends, then waits for their completions and the server's ack.
        let posted = 0;
        const windowDone = async (): Promise<void> => {
          await this.until(() => this.txDone >= posted && this.acksIn > acks, 'window (send completions and ack)');
          acks++;
          if (acks < finalAck) await this.recv(this.ackRx, ACK_TAG_BASE + acks, 'post ack recv');
          j = 0;
        };
        for (let i = 0; i < total; i++) {
          if (i === p.warmup) start = process.hrtime.bigint();
          await this.send(this.message(i), i, 'send');
          posted++;
          if (++j === window) await windowDone();
        }
        await windowDone();
      } else {
        // Posts a window of receives, waits for them, then sends the ack.
        let posted = 0;
        const windowDone = async (): Promise<void> => {
          await this.until(() => this.rxDone >= posted, 'window of receives');
          await this.send(this.ackBuf, ACK_TAG_BASE + acks, 'ack');
          const sent = ++acks;
          await this.until(() => this.txDone >= sent, 'ack send completion');
          j = 0;
        };
        for (let i = 0; i < total; i++) {
          if (i === p.warmup) start = process.hrtime.bigint();
          this.expectIndex(i);
          await this.recv(this.dataRx(this.rxBuf.subarray(j * this.size, (j + 1) * this.size)), i, 'post recv');
          posted++;
          if (++j === window) await windowDone();
        }
        await windowDone();
      }
    }
    const elapsedUs = Number((process.hrtime.bigint() - start) / 1000n);
    if (this.data.pending !== 0) throw new DataCheckError(`${this.data.pending} messages of size ${this.size} were never checked`);
    return { elapsedUs, verified: this.data.checked };
  }
}

function parsePlan(argv: string[]): FiPlan {
  const { values } = parseArgs({ args: argv, options: { plan: { type: 'string' } }, strict: true });
  if (values.plan === undefined) throw new InvalidArgumentError('fi-rank: --plan <json> is required (the fi-pingpong and fi-bw commands write it)');
  const plan = JSON.parse(values.plan) as FiPlan;
  const n = plan.sizes.length;
  if (n === 0 || plan.iters.length !== n || plan.windows.length !== n) throw new InvalidArgumentError('fi-rank: a plan needs sizes, iters and windows of one length');
  if (plan.windows.some((w) => w < 1 || w > MAX_WINDOW)) throw new InvalidArgumentError(`fi-rank: windows are 1..${MAX_WINDOW}`);
  return plan;
}

function txCounts(ep: RdmEndpoint): number[] {
  return FI_PROTOCOLS.map((p) => ep.stats.txMessages(p));
}

async function main(): Promise<void> {
  const plan = parsePlan(process.argv.slice(2));
  const dev = await openDevice();
  const rank = dev.rank ?? 0;
  if (dev.worldSize !== 2) throw new InvalidArgumentError(`fi-rank: runs as 2 ranks (client 0, server 1), got a world of ${String(dev.worldSize)}`);
  const client = rank === 0;
  const job = process.env.EFA_EMU_JOB_ID ?? 'fi';
  const ep = await RdmEndpoint.open(dev, { progress: plan.comp === 'spin' ? 'busy' : 'event' });
  try {
    const addrs = await insertRanks(ep, dev.daemon, rank, 2, `${job}/fi/addr`);
    const r = new Rank(ep, addrs[rank ^ 1], plan);
    for (let k = 0; k < plan.sizes.length; k++) {
      await r.prepare(k, client);
      await dev.daemon.barrier(`${job}/fi/sync/${k}`, 2, 600_000);
      const before = txCounts(ep);
      const res = await r.run(k, client);
      if (!client) {
        await dev.daemon.put(`${job}/fi/verified/${k}`, String(res.verified));
        continue;
      }
      const after = txCounts(ep);
      const protocols: Partial<Record<FiProtocol, number>> = {};
      FI_PROTOCOLS.forEach((p, i) => {
        if (after[i] > before[i]) protocols[p] = after[i] - before[i];
      });
      const server = Number(await dev.daemon.get(`${job}/fi/verified/${k}`, 600_000));
      const out: FiSizeResult = { size: plan.sizes[k], iters: plan.iters[k], warmup: plan.warmup, window: plan.windows[k], elapsedUs: res.elapsedUs, protocols, verified: { client: res.verified, server } };
      process.stdout.write(`${JSON.stringify({ fi: out })}\n`);
    }
    // ft_finalize's last sync: neither side closes while the other may still need an answer.
    await dev.daemon.barrier(`${job}/fi/end`, 2, 600_000);
    // EFA_EMU_FI_STATS=1 prints each rank's device and endpoint counters, to see where the time goes.
    if (process.env.EFA_EMU_FI_STATS === '1') {
      const nz = (o: Record<string, number>): Record<string, number> => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== 0));
      process.stderr.write(`stats rank ${rank}: device ${JSON.stringify(nz(dev.statsSnapshot()))} rdm ${JSON.stringify(nz(ep.statsSnapshot()))}\n`);
    }
    if (client) {
      const end: FiEndReport = { stats: Object.fromEntries(Object.entries(ep.statsSnapshot()).filter(([, v]) => v !== 0)) };
      process.stdout.write(`${JSON.stringify({ fiEnd: end })}\n`);
    }
  } finally {
    await ep.close();
    await dev.close();
  }
}

main().catch((err: Error & { code?: string }) => {
  // The library's and the tool's own errors say all in one line; others are bugs.
  const text = err instanceof EfaError ? err.message : (err.stack ?? err.message);
  process.stderr.write(`fi: ${err.code ? `${err.code}: ` : ''}${text}\n`);
  process.exitCode = 1;
});
