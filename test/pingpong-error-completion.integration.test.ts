/*
 * The ping-pong stops at the first error completion, as ibv_ud_pingpong does, instead of
 * resending for ever: the fixture makes the server's receive buffers too short for the
 * client's pings, so the device itself produces the error completions.
 */
import path from 'node:path';
import t from 'tap';
import { EfaStatus, efaStatusStr, WcStatus, wcStatusStr } from '../src/device/constants';
import { runCli } from './helpers/run-cli';

const FIXTURE = path.join(__dirname, 'fixtures', 'pingpong-size-mismatch.js');
const FAILED_LINE = /^\[(\d)\] Failed status (.+?) \((\d+)\) for wr_id (\d+) \(vendor_err (\d+) (\S+)\)$/gm;
/** Bound on the whole run: without the abort it would run until this kills it. */
const TIMEOUT_MS = 30_000;

function failedLines(stderr: string): Array<{ rank: number; name: string; status: number; wrId: number; vendorErr: number; vendorName: string }> {
  return [...stderr.matchAll(FAILED_LINE)].map((m) => ({ rank: Number(m[1]), name: m[2], status: Number(m[3]), wrId: Number(m[4]), vendorErr: Number(m[5]), vendorName: m[6] }));
}

t.test('UD: the server aborts on its LOCAL_ERROR_BAD_LENGTH receive and the job fails', async (t) => {
  const run = await runCli(['launch', '-n', '2', FIXTURE, '--', 'ud'], { timeoutMs: TIMEOUT_MS });
  t.equal(run.signal, null, `ended by itself (stderr: ${run.stderr.slice(-2000)})`);
  t.equal(run.code, 1, 'the launcher reports the failed rank');
  // The server's first posted receive (wr_id 0) gets the first ping; a UD send succeeds.
  t.same(failedLines(run.stderr), [{ rank: 1, name: 'local length error', status: WcStatus.LOC_LEN_ERR, wrId: 0, vendorErr: EfaStatus.LOCAL_ERROR_BAD_LENGTH, vendorName: 'LOCAL_ERROR_BAD_LENGTH' }]);
  t.notMatch(run.stderr, /^\[\d\]\s+at /m, 'no stack trace');
  t.equal(run.stdout, '', 'no result: the client never got a pong');
});

t.test('SRD: the receive fails LOCAL_ERROR_BAD_LENGTH, the send REMOTE_ERROR_BAD_LENGTH', async (t) => {
  const run = await runCli(['launch', '-n', '2', FIXTURE, '--', 'srd'], { timeoutMs: TIMEOUT_MS });
  t.equal(run.signal, null, `ended by itself (stderr: ${run.stderr.slice(-2000)})`);
  t.equal(run.code, 1, 'the launcher reports the failed rank');
  const lines = failedLines(run.stderr);
  // Both ranks fail at once; the launcher may stop one before it prints, never both.
  t.ok(lines.length >= 1, 'at least one rank reported its error completion');
  for (const l of lines) {
    t.equal(l.name, wcStatusStr(l.status), 'the name is the status number\'s');
    t.equal(l.vendorName, efaStatusStr(l.vendorErr), 'the vendor error\'s name is its number\'s');
    if (l.rank === 1) t.same(l, { rank: 1, name: 'local length error', status: WcStatus.LOC_LEN_ERR, wrId: 0, vendorErr: EfaStatus.LOCAL_ERROR_BAD_LENGTH, vendorName: 'LOCAL_ERROR_BAD_LENGTH' }, 'the server: its first receive');
    else t.same(l, { rank: 0, name: 'remote invalid request error', status: WcStatus.REM_INV_REQ_ERR, wrId: 0, vendorErr: EfaStatus.REMOTE_ERROR_BAD_LENGTH, vendorName: 'REMOTE_ERROR_BAD_LENGTH' }, 'the client: ping 0');
  }
  t.notMatch(run.stderr, /^\[\d\]\s+at /m, 'no stack trace');
});
