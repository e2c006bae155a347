/*
 * The ping-pong shared by examples/ud-pingpong.ts and the `efa-emu pingpong` command, in the
 * spirit of rdma-core's ibv_ud_pingpong: ranks 2k and 2k+1 pair up, swap GID and QPN through
 * the daemon's key/value store, and bounce a message back and forth `iters` times.
 *
 * UD may lose a packet: the client notices by a timeout, counts it as `lost` and sends the
 * same ping again; stale pongs are recognised by their sequence number and ignored. An error
 * completion is not a loss: like ibv_ud_pingpong, either side stops at the first one with
 * `Failed status NAME (N) for wr_id W`, since resending cannot cure it.
 */
import { parseArgs } from 'node:util';
import { AccessFlags, GRH_LENGTH, QpState, QpType, WcOpcode, WcStatus, wcStatusStr, efaStatusStr } from '../../device/constants';
import type { WorkCompletion } from '../../device/work-completion';
import type { AddressHandle } from '../../device/address-handle';
import type { CompletionQueue } from '../../device/completion-queue';
import type { QueuePair } from '../../device/queue-pair';
import { CompletionPoller } from '../../completion-poller';
import { EfaError, InvalidArgumentError } from '../../common/errors';
import { readRankEnv } from '../../env';
import { openDevice, type EfaDevice } from '../../open-device';

export interface PingPongOptions {
  qpType: QpType;
  size: number;
  iters: number;
  json: boolean;
  poll: 'event' | 'busy';
  /** Milliseconds without the expected pong before the ping is sent again. */
  timeoutMs: number;
}

/** A rank's result; the client prints it as one JSON line with --json. */
export interface PingPongResult {
  /** The client sends the pings and times the round trips; the server echoes them. */
  role: 'client' | 'server';
  type: string;
  size: number;
  iters: number;
  completed: number;
  /** Always 0 in a result: an error completion aborts the run (kept for the JSON's readers). */
  errors: number;
  lost: number;
  seconds: number;
  /** Microseconds per round trip (ping and pong), as ibv_ud_pingpong's usec/iter. */
  usec_per_iter: number;
  mbit_per_sec: number;
  rank: number;
  peer: number;
  /** SRD: packets both devices sent again (loss recovery), from their counters. */
  retransmits?: number;
}

/**
 * An error completion ended the ping-pong. The message is ibv_ud_pingpong's line, with EFA's
 * vendor error after it, e.g.
 * `Failed status local length error (1) for wr_id 0 (vendor_err 6 LOCAL_ERROR_BAD_LENGTH)`.
 */
export class CompletionFailedError extends EfaError {
  constructor(
    /** The completion's ibv_wc_status (see wcStatusStr). */
    readonly status: number,
    readonly wrId: number,
    /** The completion's WcOpcode: which side (send or receive) failed. */
    readonly opcode: number,
    /** The EFA completion status (see efaStatusStr). */
    readonly vendorErr: number = 0,
  ) {
    super('EWCSTATUS', `Failed status ${wcStatusStr(status)} (${status}) for wr_id ${wrId} (vendor_err ${vendorErr} ${efaStatusStr(vendorErr)})`);
  }
}

const QKEY = 0x11111111;
const RECV_DEPTH = 64;
const SEQ_BYTES = 4;

/** Reads the example's flags; a bad one is an InvalidArgumentError naming it. */
export function parsePingPongArgs(argv: string[], qpType: QpType): PingPongOptions {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        size: { type: 'string', default: '64' },
        iters: { type: 'string', default: '1000' },
        json: { type: 'boolean', default: false },
        poll: { type: 'string', default: 'event' },
        'timeout-ms': { type: 'string', default: '100' },
      },
      allowPositionals: false,
    }));
  } catch (err) {
    // node:util's own message names the flag; its stack would say nothing more.
    throw new InvalidArgumentError((err as Error).message);
  }
  const int = (name: string, text: string, min: number, max: number): number => {
    const v = Number(text);
    if (!Number.isInteger(v) || v < min || v > max) throw new InvalidArgumentError(`--${name} must be an integer in ${min}..${max}, got ${text}`);
    return v;
  };
  const poll = values.poll;
  if (poll !== 'event' && poll !== 'busy') throw new InvalidArgumentError(`--poll must be event or busy, got ${String(poll)}`);
  return {
    qpType,
    // The upper bound is the device's MTU, checked once the device is open (runPingPong).
    size: int('size', values.size as string, SEQ_BYTES, 65000),
    iters: int('iters', values.iters as string, 1, 100_000_000),
    json: values.json as boolean,
    poll,
    timeoutMs: int('timeout-ms', values['timeout-ms'] as string, 1, 600_000),
  };
}

/**
 * Runs one rank of the ping-pong; resolves with its result (null on an idle rank). Rejects
 * with {@link CompletionFailedError} on an error completion.
 */
export async function runPingPong(opts: PingPongOptions): Promise<PingPongResult | null> {
  // A lone rank would wait a minute for a partner that cannot exist: refuse it at once.
  const world = readRankEnv().size ?? 1;
  if (world < 2) throw new InvalidArgumentError(`the ping-pong needs 2 ranks or more (efa-emu launch -n 2 ...), the world size is ${world}`);
  const dev = await openDevice();
  // Closed on every way out: an open device (its UDP socket) keeps the process alive.
  try {
    const rank = dev.rank ?? 0;
    const peerRank = rank ^ 1;
    if (peerRank >= world) {
      process.stderr.write(`rank ${rank}: no partner (odd world size ${world}), idle\n`);
      return null;
    }
    // As ibv_ud_pingpong checks the port MTU: a larger send could only fail (no segmentation).
    const attrs = await dev.queryDevice();
    if (opts.size > attrs.maxMsgSize) {
      throw new InvalidArgumentError(`--size ${opts.size}: larger than the device MTU (${attrs.mtu} bytes)`);
    }
    return await new PingPong(dev, opts, rank, peerRank).run();
  } finally {
    await dev.close();
  }
}

/**
 * Prints why a ping-pong program failed and sets exit status 1: an error completion as
 * ibv_ud_pingpong's one line, the library's other errors as one line with their code, and
 * anything else (a bug) with its stack.
 */
export function reportFailure(program: string, err: unknown): void {
  const e = err as Error & { code?: string };
  if (err instanceof CompletionFailedError) process.stderr.write(`${err.message}\n`);
  else if (err instanceof EfaError) process.stderr.write(`${program}: ${e.code}: ${e.message}\n`);
  else process.stderr.write(`${program}: ${e.code ? `${e.code}: ` : ''}${e.stack ?? String(err)}\n`);
  process.exitCode = 1;
}

class PingPong {
  private readonly client: boolean;
  private qp!: QueuePair;
  private cq!: CompletionQueue;
  private ah!: AddressHandle;
  private peerQpn = 0;
  private sendLkey = 0;
  private recvLkey = 0;
  private sendBuf!: Buffer;
  private recvBuf!: Buffer;
  private readonly slot: number;
  /** UD receive buffers begin with the 40-byte GRH; SRD ones do not. */
  private readonly grh: number;
  private seq = 0;
  private completed = 0;
  private lost = 0;
  private lastSendAt = 0;
  private finished = false;
  private done!: () => void;
  private poller: CompletionPoller | null = null;
  /** The first error completion, once one came. */
  private failure: CompletionFailedError | null = null;
  private fail!: (err: CompletionFailedError) => void;
  /** Rejects with the first error completion; every wait of the run races it. */
  private readonly failed: Promise<never>;

  constructor(
    private readonly dev: EfaDevice,
    private readonly opts: PingPongOptions,
    private readonly rank: number,
    private readonly peerRank: number,
  ) {
    this.client = rank % 2 === 0;
    this.grh = opts.qpType === QpType.UD ? GRH_LENGTH : 0;
    this.slot = this.grh + opts.size;
    this.failed = new Promise<never>((_, reject) => {
      this.fail = reject;
    });
    // Handled by whichever wait races it; this keeps a failure between waits from being unhandled.
    this.failed.catch(() => undefined);
  }

  /** Waits for `p`, or rejects as soon as a completion fails. */
  private orFail<T>(p: Promise<T>): Promise<T> {
    return Promise.race([p, this.failed]);
  }

  /** Stops at the first error completion; the wait under way rejects with it. */
  private abort(wc: WorkCompletion): void {
    if (this.failure !== null) return;
    this.failure = new CompletionFailedError(wc.status, wc.wrId, wc.opcode, wc.vendorErr);
    this.poller?.stop();
    this.fail(this.failure);
  }

  async run(): Promise<PingPongResult | null> {
    const { dev, opts } = this;
    const pd = await dev.allocPd();
    const channel = dev.createCompChannel();
    this.cq = await dev.createCq({ cqe: RECV_DEPTH + 64, channel });
    this.qp = await dev.createQp(pd, {
      qpType: opts.qpType,
      sendCq: this.cq,
      recvCq: this.cq,
      cap: { maxSendWr: 32, maxRecvWr: RECV_DEPTH, maxSendSge: 1, maxRecvSge: 1 },
    });
    this.sendBuf = Buffer.alloc(opts.size, 0xab);
    this.recvBuf = Buffer.alloc(this.slot * RECV_DEPTH);
    this.sendLkey = (await dev.regMr(pd, this.sendBuf, 0)).lkey;
    this.recvLkey = (await dev.regMr(pd, this.recvBuf, AccessFlags.LOCAL_WRITE)).lkey;
    await dev.modifyQp(this.qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: QKEY });
    await dev.modifyQp(this.qp, { qpState: QpState.RTR });
    await dev.modifyQp(this.qp, { qpState: QpState.RTS, sqPsn: 0 });
    for (let i = 0; i < RECV_DEPTH; i++) this.postRecv(i);

    const job = process.env.EFA_EMU_JOB_ID ?? 'default';
    const key = (r: number): string => `${job}/pingpong/${opts.qpType}/${r}`;
    await dev.daemon.put(key(this.rank), JSON.stringify({ gid: dev.gidText, qpn: this.qp.qpNum }));
    const peer = JSON.parse(await dev.daemon.get(key(this.peerRank), 60_000)) as { gid: string; qpn: number };
    this.peerQpn = peer.qpn;
    this.ah = await dev.createAh(pd, { gid: peer.gid });
    // ibv_ud_pingpong's preamble, on both sides (EFA has no LIDs; the send PSN is 0).
    if (!opts.json) {
      process.stdout.write(`  local address:  LID 0x0000, QPN 0x${hex6(this.qp.qpNum)}, PSN 0x000000: GID ${dev.gidText}\n`);
      process.stdout.write(`  remote address: LID 0x0000, QPN 0x${hex6(peer.qpn)}, PSN 0x000000, GID ${peer.gid}\n`);
    }
    // Both sides have posted their receives before either sends.
    const pair = Math.min(this.rank, this.peerRank);
    await dev.daemon.barrier(`${job}/pingpong/${opts.qpType}/${pair}/ready`, 2, 60_000);

    const finishedAll = new Promise<void>((resolve) => {
      this.done = resolve;
    });
    // Event mode arms the CQ and polls once at start: the peer may have sent before we armed,
    // and that completion raised no event (ibv_req_notify_cq only reports later ones).
    const poller = new CompletionPoller(dev, this.cq, opts.poll, (wcs, n) => {
      for (let i = 0; i < n && this.failure === null; i++) this.handle(wcs[i]);
    });
    this.poller = poller;
    poller.start();
    const start = performance.now();
    let end = start;
    let watchdog: NodeJS.Timeout | null = null;
    // The watchdog and the poller stop on every way out, an error completion included.
    try {
      if (this.client) {
        this.sendPing();
        // UD loses packets and only a timeout tells; SRD recovers by itself.
        if (opts.qpType === QpType.UD) watchdog = setInterval(() => this.checkTimeout(), Math.max(1, Math.floor(opts.timeoutMs / 4)));
      }
      // The server echoes until the client, having every pong, meets it at this barrier; the
      // client enters it only then. The server's own time ends when it has echoed the last
      // ping (once: UD may resend it), or, should it not count them all, when the client is through.
      const meet = (): Promise<void> => dev.daemon.barrier(`${job}/pingpong/${opts.qpType}/${pair}/done`, 2, 600_000);
      const met = this.client ? null : meet();
      await this.orFail(met === null ? finishedAll : Promise.race([finishedAll, met]));
      end = performance.now();
      if (watchdog !== null) clearInterval(watchdog);
      await this.orFail(met ?? meet());
    } finally {
      if (watchdog !== null) clearInterval(watchdog);
      this.finished = true;
      poller.stop();
    }
    const retransKey = `${job}/pingpong/${opts.qpType}/${pair}/server-retrans`;
    let retransmits: number | undefined;
    if (!this.client) {
      if (opts.qpType === QpType.SRD) await dev.daemon.put(retransKey, String(dev.stats.retrans_pkts));
    } else {
      retransmits = opts.qpType === QpType.SRD ? dev.stats.retrans_pkts + Number(await dev.daemon.get(retransKey, 60_000)) : undefined;
    }
    const seconds = (end - start) / 1000;
    const bytes = opts.size * opts.iters * 2;
    return {
      role: this.client ? 'client' : 'server',
      type: opts.qpType.toLowerCase(),
      size: opts.size,
      iters: opts.iters,
      completed: this.completed,
      errors: 0,
      lost: this.lost,
      seconds: round(seconds, 6),
      usec_per_iter: round((seconds * 1e6) / opts.iters, 3),
      mbit_per_sec: round((bytes * 8) / seconds / 1e6, 3),
      rank: this.rank,
      peer: this.peerRank,
      ...(retransmits !== undefined ? { retransmits } : {}),
    };
  }

  private postRecv(i: number): void {
    this.dev.postRecv(this.qp, { wrId: i, sgList: [{ addr: i * this.slot, length: this.slot, lkey: this.recvLkey }] });
  }

  private send(seq: number): void {
    this.sendBuf.writeUInt32BE(seq >>> 0, 0);
    try {
      this.dev.postSend(this.qp, {
        wrId: seq,
        sgList: [{ addr: 0, length: this.opts.size, lkey: this.sendLkey }],
        ah: this.ah,
        remoteQpn: this.peerQpn,
        remoteQkey: QKEY,
      });
    } catch (err) {
      // A full send queue means completions are behind; the retry timer sends again.
      if ((err as { code?: string }).code !== 'ENOMEM') throw err;
    }
  }

  private sendPing(): void {
    this.lastSendAt = performance.now();
    this.send(this.seq);
  }

  private checkTimeout(): void {
    if (this.completed >= this.opts.iters || this.failure !== null) return;
    if (performance.now() - this.lastSendAt >= this.opts.timeoutMs) {
      this.lost++;
      this.sendPing();
    }
  }

  private handle(wc: WorkCompletion): void {
    // Any failure, FLUSHED included: completions are only polled while the run is under way,
    // when nothing moves the QP to ERR.
    if (wc.status !== WcStatus.SUCCESS) {
      this.abort(wc);
      return;
    }
    if (wc.opcode !== WcOpcode.RECV) return;
    const slot = wc.wrId;
    const seq = this.recvBuf.readUInt32BE(slot * this.slot + this.grh);
    if (!this.finished && !this.dev.closed) this.postRecv(slot);
    if (!this.client) {
      this.send(seq);
      // The server's iterations are the distinct pings it echoed.
      if (seq === this.seq && this.completed < this.opts.iters) {
        this.completed++;
        this.seq = (this.seq + 1) >>> 0;
        if (this.completed === this.opts.iters) this.done();
      }
      return;
    }
    if (seq !== this.seq || this.completed >= this.opts.iters) return; // a stale pong after a resend
    this.completed++;
    this.seq = (this.seq + 1) >>> 0;
    if (this.completed === this.opts.iters) this.done();
    else this.sendPing();
  }
}

function round(v: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

function hex6(v: number): string {
  return v.toString(16).padStart(6, '0');
}

/**
 * Prints a rank's result as ibv_ud_pingpong does on both sides (usec/iter is a round trip), or,
 * with --json, the client's as one JSON line (the server prints nothing: one line to parse).
 */
export function printResult(res: PingPongResult, json: boolean): void {
  if (json) {
    if (res.role === 'client') process.stdout.write(`${JSON.stringify(res)}\n`);
    return;
  }
  const bytes = res.size * res.iters * 2;
  process.stdout.write(`${bytes} bytes in ${res.seconds.toFixed(2)} seconds = ${res.mbit_per_sec.toFixed(2)} Mbit/sec\n`);
  process.stdout.write(`${res.iters} iters in ${res.seconds.toFixed(2)} seconds = ${res.usec_per_iter.toFixed(2)} usec/iter\n`);
  if (res.lost > 0) process.stdout.write(`lost ${res.lost}\n`);
  if (res.retransmits !== undefined && res.retransmits > 0) process.stdout.write(`retransmits ${res.retransmits}\n`);
}
