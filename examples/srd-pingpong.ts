/*
 * SRD ping-pong: ibv_ud_pingpong's exchange over an SRD QP (reliable, unordered).
 *
 *   npx efa-emu launch -n 2 examples/srd-pingpong.ts -- --size 64 --iters 1000 [--json] [--poll busy]
 *
 * Ranks 2k and 2k+1 pair up; the even rank prints the result.
 */
import { QpType } from '../src/index';
import { parsePingPongArgs, printResult, reportFailure, runPingPong } from '../src/job/pingpong/pingpong';

async function main(): Promise<void> {
  const opts = parsePingPongArgs(process.argv.slice(2), QpType.SRD);
  const res = await runPingPong(opts);
  if (res !== null) printResult(res, opts.json);
}

main().catch((err: unknown) => reportFailure('srd-pingpong', err));
