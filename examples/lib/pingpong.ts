/*
 * The ping-pong shared by examples/ud-pingpong.ts and the `efa-emu pingpong` command, in the
 * spirit of rdma-core's ibv_ud_pingpong: ranks 2k and 2k+1 pair up, swap GID and QPN through
 * the daemon's key/value store, and bounce a message back and forth `iters` times.
 *
 * UD may lose a packet: the client notices by a timeout, counts it as `lost` and sends the
 * same ping again; stale pongs are recognised by their sequence number and ignored.
 */
import { parseArgs } from 'node:util';
import {
  AccessFlags,
  GRH_LENGTH,
  QpState,
  QpType,
  WcOpcode,
  WcStatus,
  CompletionPoller,
  type WorkCompletion,
  openDevice,
  type AddressHandle,
  type CompletionQueue,
  type EfaDevice,
  type QueuePair,
} from '../../src/index';

export interface PingPongOptions {
  qpType: QpType;
  size: number;
  iters: number;
  json: boolean;
  poll: 'event' | 'busy';
  /** Milliseconds without the expected pong before the ping is sent again. */
  timeoutMs: number;
}

/** The JSON result line the client prints with --json. */
export interface PingPongResult {
  type: string;
  size: number;
  iters: number;
  completed: number;
  errors: number;
  lost: number;
  seconds: number;
  usec_per_iter: number;
  mbit_per_sec: number;
  rank: number;
  peer: number;
  /** SRD: packets both devices sent again (loss recovery), from their counters. */
  retransmits?: number;
}

const QKEY = 0x11111111;
const RECV_DEPTH = 64;
const SEQ_BYTES = 4;

export function parsePingPongArgs(argv: string[], qpType: QpType): PingPongOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      size: { type: 'string', default: '64' },
      iters: { type: 'string', default: '1000' },
      json: { type: 'boolean', default: false },
      poll: { type: 'string', default: 'event' },
      'timeout-ms': { type: 'string', default: '100' },
    },
    allowPositionals: false,
  });
  const int = (name: string, text: string, min: number, max: number): number => {
    const v = Number(text);
    if (!Number.isInteger(v) || v < min || v > max) throw new Error(`--${name} must be an integer in ${min}..${max}, got ${text}`);
    return v;
  };
  const poll = values.poll;
  if (poll !== 'event' && poll !== 'busy') throw new Error(`--poll must be event or busy, got ${poll}`);
  return {
    qpType,
    size: int('size', values.size as string, SEQ_BYTES, 65000),
    iters: int('iters', values.iters as string, 1, 100_000_000),
    json: values.json as boolean,
    poll,
    timeoutMs: int('timeout-ms', values['timeout-ms'] as string, 1, 600_000),
  };
}

/** Runs one rank of the ping-pong; resolves with the client's result (null on a server or an idle rank). */
export async function runPingPong(opts: PingPongOptions): Promise<PingPongResult | null> {
  const dev = await openDevice();
  try {
    const rank = dev.rank ?? 0;
    const world = dev.worldSize ?? 1;
    const peerRank = rank ^ 1;
    if (peerRank >= world) {
      if (world > 1) process.stderr.write(`rank ${rank}: no partner (odd world size ${world}), idle\n`);
      return null;
    }
    return await new PingPong(dev, opts, rank, peerRank).run();
  } finally {
    await dev.close();
  }
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
  private errors = 0;
  private lost = 0;
  private lastSendAt = 0;
  private finished = false;
  private done!: () => void;

  constructor(
    private readonly dev: EfaDevice,
    private readonly opts: PingPongOptions,
    private readonly rank: number,
    private readonly peerRank: number,
  ) {
    this.client = rank % 2 === 0;
    this.grh = opts.qpType === QpType.UD ? GRH_LENGTH : 0;
    this.slot = this.grh + opts.size;
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
    // Both sides have posted their receives before either sends.
    const pair = Math.min(this.rank, this.peerRank);
    await dev.daemon.barrier(`${job}/pingpong/${opts.qpType}/${pair}/ready`, 2, 60_000);

    const finishedAll = new Promise<void>((resolve) => {
      this.done = resolve;
    });
    // Event mode arms the CQ and polls once at start: the peer may have sent before we armed,
    // and that completion raised no event (ibv_req_notify_cq only reports later ones).
    const poller = new CompletionPoller(dev, this.cq, opts.poll, (wcs, n) => {
      for (let i = 0; i < n; i++) this.handle(wcs[i]);
    });
    poller.start();
    const start = performance.now();
    let watchdog: NodeJS.Timeout | null = null;
    if (this.client) {
      this.sendPing();
      // UD loses packets and only a timeout tells; SRD recovers by itself.
      if (opts.qpType === QpType.UD) watchdog = setInterval(() => this.checkTimeout(), Math.max(1, Math.floor(opts.timeoutMs / 4)));
      await finishedAll;
    }
    const end = performance.now();
    if (watchdog !== null) clearInterval(watchdog);
    // The server echoes until the client, having every pong, meets it here.
    await dev.daemon.barrier(`${job}/pingpong/${opts.qpType}/${pair}/done`, 2, 600_000);
    this.finished = true;
    poller.stop();
    const retransKey = `${job}/pingpong/${opts.qpType}/${pair}/server-retrans`;
    if (!this.client) {
      if (opts.qpType === QpType.SRD) await dev.daemon.put(retransKey, String(dev.stats.retrans_pkts));
      return null;
    }
    const retransmits = opts.qpType === QpType.SRD ? dev.stats.retrans_pkts + Number(await dev.daemon.get(retransKey, 60_000)) : undefined;
    const seconds = (end - start) / 1000;
    const bytes = opts.size * opts.iters * 2;
    return {
      type: opts.qpType.toLowerCase(),
      size: opts.size,
      iters: opts.iters,
      completed: this.completed,
      errors: this.errors,
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
    if (this.completed >= this.opts.iters) return;
    if (performance.now() - this.lastSendAt >= this.opts.timeoutMs) {
      this.lost++;
      this.sendPing();
    }
  }

  private handle(wc: WorkCompletion): void {
    if (wc.opcode !== WcOpcode.RECV) {
      if (wc.status !== WcStatus.SUCCESS) this.errors++;
      return;
    }
    const slot = wc.wrId;
    const status = wc.status;
    const seq = status === WcStatus.SUCCESS ? this.recvBuf.readUInt32BE(slot * this.slot + this.grh) : -1;
    if (!this.finished && !this.dev.closed) this.postRecv(slot);
    if (status !== WcStatus.SUCCESS) {
      if (status !== WcStatus.FLUSHED) this.errors++;
      return;
    }
    if (!this.client) {
      this.send(seq);
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

/** Prints the client's result like ibv_ud_pingpong, or as one JSON line with --json. */
export function printResult(res: PingPongResult, json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(res)}\n`);
    return;
  }
  const bytes = res.size * res.iters * 2;
  process.stdout.write(`${bytes} bytes in ${res.seconds.toFixed(2)} seconds = ${res.mbit_per_sec.toFixed(2)} Mbit/sec\n`);
  process.stdout.write(`${res.iters} iters in ${res.seconds.toFixed(2)} seconds = ${res.usec_per_iter.toFixed(2)} usec/iter\n`);
  if (res.lost > 0 || res.errors > 0) process.stdout.write(`lost ${res.lost}, errors ${res.errors}\n`);
  if (res.retransmits !== undefined && res.retransmits > 0) process.stdout.write(`retransmits ${res.retransmits}\n`);
}
