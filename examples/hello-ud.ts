/*
 * The smallest complete efa-emu program (shown in the README): two ranks swap a UD message.
 *
 *   npx efa-emu launch -n 2 examples/hello-ud.ts
 */
import { openDevice, readRankEnv, QpState, QpType, AccessFlags, GRH_LENGTH, InvalidArgumentError, WorkCompletion, WcOpcode, wcStatusStr } from '../src/index';

async function main(): Promise<void> {
  // Rank r talks to rank r^1 and the barriers count 2: with any other world size it would
  // only wait for a partner that does not exist.
  const size = readRankEnv().size;
  if (size !== 2) throw new InvalidArgumentError(`needs exactly 2 ranks (npx efa-emu launch -n 2 examples/hello-ud.ts), got ${size ?? 'none'}`);
  const dev = await openDevice(); // rank, size and daemon come from `efa-emu launch`
  try {
    const pd = await dev.allocPd();
    const cq = await dev.createCq({ cqe: 64 });
    const qp = await dev.createQp(pd, { qpType: QpType.UD, sendCq: cq, recvCq: cq, cap: { maxSendWr: 16, maxRecvWr: 16 } });
    const buf = Buffer.alloc(GRH_LENGTH + 64);
    const mr = await dev.regMr(pd, buf, AccessFlags.LOCAL_WRITE);
    await dev.modifyQp(qp, { qpState: QpState.INIT, pkeyIndex: 0, portNum: 1, qkey: 0x1234 });
    await dev.modifyQp(qp, { qpState: QpState.RTR });
    await dev.modifyQp(qp, { qpState: QpState.RTS, sqPsn: 0 });
    dev.postRecv(qp, { wrId: 1, sgList: [{ addr: 0, length: GRH_LENGTH + 32, lkey: mr.lkey }] });

    const job = process.env.EFA_EMU_JOB_ID ?? 'hello';
    const me = dev.rank ?? 0;
    await dev.daemon.put(`${job}/qp/${me}`, JSON.stringify({ gid: dev.gidText, qpn: qp.qpNum }));
    const peer = JSON.parse(await dev.daemon.get(`${job}/qp/${me ^ 1}`)) as { gid: string; qpn: number };
    const ah = await dev.createAh(pd, { gid: peer.gid });
    await dev.daemon.barrier(`${job}/ready`, 2); // both receives are posted

    buf.write(`hello from rank ${me}`, GRH_LENGTH + 32);
    dev.postSend(qp, { wrId: 2, sgList: [{ addr: GRH_LENGTH + 32, length: 17, lkey: mr.lkey }], ah, remoteQpn: peer.qpn, remoteQkey: 0x1234 });

    const wcs: WorkCompletion[] = [];
    for (let got = 0; got < 2; ) {
      const n = dev.pollCq(cq, 8, wcs); // the send completion and the receive completion
      for (let i = 0; i < n; i++) {
        const wc = wcs[i];
        if (wc.opcode === WcOpcode.RECV) {
          const text = buf.toString('utf8', GRH_LENGTH, wc.byteLen);
          console.log(`rank ${me} got "${text}" from QP ${wc.srcQp} (AH ${wc.ah}): ${wcStatusStr(wc.status)}`);
        }
      }
      got += n;
      if (n === 0) await new Promise((r) => setImmediate(r));
    }
    await dev.daemon.barrier(`${job}/done`, 2);
  } finally {
    await dev.close(); // on failure too: an open device (its UDP socket) keeps the process alive
  }
}

main().catch((err: Error & { code?: string }) => {
  console.error(`hello-ud: ${err.code ? `${err.code}: ` : ''}${err.message}`);
  process.exitCode = 1;
});
