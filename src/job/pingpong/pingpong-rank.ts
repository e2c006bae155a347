/*
 * One rank of `efa-emu pingpong` (the command starts two through the launcher). The first
 * argument names the QP type (`ud` or `srd`); the rest are the ping-pong's own flags.
 */
import { QpType } from '../../device/constants';
import { InvalidArgumentError } from '../../common/errors';
import { parsePingPongArgs, printResult, reportFailure, runPingPong } from './pingpong';

async function main(): Promise<void> {
  const [type, ...rest] = process.argv.slice(2);
  if (type !== 'ud' && type !== 'srd') throw new InvalidArgumentError(`the first argument must be ud or srd, got ${String(type)}`);
  const opts = parsePingPongArgs(rest, type === 'ud' ? QpType.UD : QpType.SRD);
  const res = await runPingPong(opts);
  if (res !== null) printResult(res, opts.json);
}

main().catch((err: unknown) => reportFailure('pingpong', err));
