/*
 * RDMA write with immediate into a QP that posts no receives, as aws-ofi-nccl's RDMA protocol
 * does: rank 1 creates its SRD QP with EFADV_QP_FLAGS_UNSOLICITED_WRITE_RECV and exposes a
 * buffer (REMOTE_WRITE); rank 0 writes chunks of it with ibv_wr_rdma_write_imm, the immediate
 * naming the chunk. Rank 1 learns of each write from its extended CQ alone (flagged
 * unsolicited, no receive consumed) and checks every byte. Then rank 0 reads it all back with
 * ibv_wr_rdma_read and checks it again.
 *
 *   npx efa-emu launch -n 2 examples/rdma-write-imm.ts -- [--size BYTES] [--count N]
 */
import { parseArgs } from 'node:util';
import {
  AccessFlags,
  EfadvQpFlags,
  EfadvWcFlags,
  ENOENT,
  InvalidArgumentError,
  QpState,
  QpType,
  WcOpcode,
  WcStatus,
  efaStatusStr,
  openDevice,
  readRankEnv,
  wcStatusStr,
  type CompletionQueue,
} from '../src/index';

const QKEY = 0x5eed;

/** The byte at offset `i` of chunk `c`: every chunk differs, so a misplaced write shows. */
function pattern(c: number, i: number): number {
  return (c * 131 + i * 7 + (i >> 9)) & 0xff;
}

/** Reads `count` completions from the extended CQ, calling `each` with each one current. */
async function pollEach(cq: CompletionQueue, count: number, each: () => void): Promise<void> {
  for (let done = 0; done < count; ) {
    if (cq.startPoll() === ENOENT) {
      await new Promise((r) => setImmediate(r));
      continue;
    }
    do {
      each();
      done++;
    } while (done < count && cq.nextPoll() === 0);
    cq.endPoll();
  }
}

function checkOk(cq: CompletionQueue, what: string): void {
  if (cq.status !== WcStatus.SUCCESS) throw new Error(`${what} ${cq.wrId} failed: ${wcStatusStr(cq.status)} (vendor_err ${cq.readVendorErr()} ${efaStatusStr(cq.readVendorErr())})`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { size: { type: 'string', default: '262144' }, count: { type: 'string', default: '8' } } });
  const size = Number(values.size);
  const count = Number(values.count);
  if (!Number.isInteger(size) || size < 1 || size > 16 << 20) throw new InvalidArgumentError(`--size: 1..${16 << 20} bytes, got ${values.size}`);
  if (!Number.isInteger(count) || count < 1 || count > 1024) throw new InvalidArgumentError(`--count: 1..1024, got ${values.count}`);
  if (readRankEnv().size !== 2) throw new InvalidArgumentError('needs exactly 2 ranks (npx efa-emu launch -n 2 examples/rdma-write-imm.ts)');

  const dev = await openDevice();
  try {
    const me = dev.rank ?? 0;
    const job = process.env.EFA_EMU_JOB_ID ?? 'rdma-write-imm';
    const pd = await dev.allocPd();
    const target = me === 1;
    // Rank 0: the chunks it writes, then room for reading them back.
    const buf = Buffer.alloc(size * count * (target ? 1 : 2));
    const mr = await dev.regMr(pd, buf, target ? AccessFlags.LOCAL_WRITE | AccessFlags.REMOTE_WRITE | AccessFlags.REMOTE_READ : AccessFlags.LOCAL_WRITE);
    // The target's CQ tells unsolicited completions apart (efadv_create_cq WITH_IS_UNSOLICITED).
    const cq = await dev.createCq({ cqe: 2 * count + 16, efadv: { wcFlags: target ? EfadvWcFlags.WITH_IS_UNSOLICITED : 0 } });
    const qp = await dev.createQp(pd, {
      qpType: QpType.SRD,
      sendCq: cq,
      recvCq: cq,
      cap: { maxSendWr: count, maxRecvWr: 1, maxSendSge: 1, maxRecvSge: 1 },
      efadv: { flags: target ? EfadvQpFlags.UNSOLICITED_WRITE_RECV : 0 },
    });
    await dev.modifyQp(qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: QKEY });
    await dev.modifyQp(qp, { qpState: QpState.RTR });
    await dev.modifyQp(qp, { qpState: QpState.RTS, sqPsn: 0 });
    await dev.daemon.put(`${job}/peer/${me}`, JSON.stringify({ gid: dev.gidText, qpn: qp.qpNum, rkey: mr.rkey }));
    const peer = JSON.parse(await dev.daemon.get(`${job}/peer/${me ^ 1}`)) as { gid: string; qpn: number; rkey: number };

    if (!target) {
      for (let c = 0; c < count; c++) for (let i = 0; i < size; i++) buf[c * size + i] = pattern(c, i);
      const ah = await dev.createAh(pd, { gid: peer.gid });
      await dev.daemon.barrier(`${job}/ready`, 2);
      const started = performance.now();
      // One batch, one doorbell: every write is built, then posted together by wrComplete.
      dev.wrStart(qp);
      for (let c = 0; c < count; c++) {
        qp.wrId = c;
        qp.wrFlags = 0;
        dev.wrRdmaWriteImm(qp, peer.rkey, c * size, c);
        dev.wrSetUdAddr(qp, ah, peer.qpn, QKEY);
        dev.wrSetSge(qp, mr.lkey, c * size, size);
      }
      dev.wrComplete(qp);
      await pollEach(cq, count, () => checkOk(cq, 'write'));
      const ms = performance.now() - started;
      console.log(`rank 0 wrote ${count} x ${size} B with immediate in ${ms.toFixed(1)} ms (${((count * size) / (ms / 1000) / 2 ** 20).toFixed(1)} MiB/s)`);
      await dev.daemon.barrier(`${job}/verified`, 2);
      // Read every chunk back into the second half and compare.
      const back = count * size;
      dev.wrStart(qp);
      for (let c = 0; c < count; c++) {
        qp.wrId = 1000 + c;
        qp.wrFlags = 0;
        dev.wrRdmaRead(qp, peer.rkey, c * size);
        dev.wrSetUdAddr(qp, ah, peer.qpn, QKEY);
        dev.wrSetSge(qp, mr.lkey, back + c * size, size);
      }
      dev.wrComplete(qp);
      await pollEach(cq, count, () => checkOk(cq, 'read'));
      if (!buf.subarray(back).equals(buf.subarray(0, back))) throw new Error('the data read back differs from what was written');
      console.log(`rank 0 read ${count} x ${size} B back with RDMA read: identical`);
    } else {
      await dev.daemon.barrier(`${job}/ready`, 2);
      const seen = new Set<number>();
      await pollEach(cq, count, () => {
        checkOk(cq, 'completion');
        if (cq.readOpcode() !== WcOpcode.RECV_RDMA_WITH_IMM) throw new Error(`unexpected opcode ${cq.readOpcode()}`);
        if (!cq.isUnsolicited()) throw new Error('a write with immediate consumed a receive on an unsolicited-write QP');
        const c = cq.readImmData();
        if (cq.readByteLen() !== size) throw new Error(`chunk ${c}: byte_len ${cq.readByteLen()}, expected ${size}`);
        if (seen.has(c)) throw new Error(`chunk ${c} completed twice`);
        // The completion follows the placement of every byte of its write.
        for (let i = 0; i < size; i++) {
          if (buf[c * size + i] !== pattern(c, i)) throw new Error(`chunk ${c}: byte ${i} is ${buf[c * size + i]}, expected ${pattern(c, i)}`);
        }
        seen.add(c);
      });
      console.log(`rank 1 got ${count} unsolicited writes with immediate, ${count * size} B verified, no receive posted`);
      await dev.daemon.barrier(`${job}/verified`, 2);
    }
    await dev.daemon.barrier(`${job}/done`, 2);
  } finally {
    await dev.close();
  }
}

main().catch((err: Error & { code?: string }) => {
  console.error(`rdma-write-imm: ${err.code ? `${err.code}: ` : ''}${err.message}`);
  process.exitCode = 1;
});
