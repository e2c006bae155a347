import { InvalidArgumentError as CommanderArgError, type Command } from 'commander';
import { InvalidArgumentError } from '../common/errors';
import { DEFAULT_ATTRIBUTES } from '../device/attributes';
import { CC_WORDS, ENV_CC, ENV_PATHS, parseCcMode } from '../env';
import type { CcMode } from '../srd/srd-config';
import { MAX_PATHS } from '../wire/header';

/** Commander argument parser for an integer in [min, max]; the message names the range. */
export function intOption(min: number, max: number): (value: string) => number {
  return (value: string): number => {
    const v = Number(value);
    if (!/^-?[0-9]+$/.test(value.trim()) || !Number.isSafeInteger(v) || v < min || v > max) {
      throw new CommanderArgError(`expected an integer in ${min}..${max}, got "${value}"`);
    }
    return v;
  };
}

/** Commander argument parser for one of a fixed set of words. */
export function choiceOption<T extends string>(choices: readonly T[]): (value: string) => T {
  return (value: string): T => {
    if (!(choices as readonly string[]).includes(value)) {
      throw new CommanderArgError(`expected one of ${choices.join(', ')}, got "${value}"`);
    }
    return value as T;
  };
}

/**
 * Every message of the ping-pong and the bench starts with a 32-bit sequence number, so none
 * can be shorter.
 */
export const MIN_MESSAGE_SIZE = 4;

/**
 * Largest message of the devices the commands start (they take the default attributes). UD
 * and SRD send one message per packet and never segment, so it is the MTU (`maxMsgSize`
 * equals it). A UD receive buffer also holds the 40-byte GRH, but that is the receiver's
 * buffer, not the payload: a UD payload may be a whole MTU.
 */
export const DEVICE_MTU = Math.min(DEFAULT_ATTRIBUTES.mtu, DEFAULT_ATTRIBUTES.maxMsgSize);

/** Largest datagram the bench's raw baseline sends (bare UDP has no MTU of ours; IPv4 allows 65507). */
export const MAX_RAW_SIZE = 65000;

/**
 * Commander argument parser for a message size: an integer of at least
 * {@link MIN_MESSAGE_SIZE}. The upper bound depends on the QP type, known only once every
 * option is parsed, so the command checks it with {@link refuseOversize}.
 */
export function messageSizeOption(value: string): number {
  const v = Number(value);
  if (!/^-?[0-9]+$/.test(value.trim()) || !Number.isSafeInteger(v) || v < MIN_MESSAGE_SIZE) {
    throw new CommanderArgError(`expected a message size in bytes, an integer of at least ${MIN_MESSAGE_SIZE} (each message carries a 32-bit sequence number), got "${value}"`);
  }
  return v;
}

/**
 * Refuses a size that cannot be sent, before any daemon or rank starts, as ibv_ud_pingpong
 * refuses a size above the port MTU: above the device MTU every send would only complete
 * with LOCAL_ERROR_BAD_LENGTH. Thrown as an InvalidArgumentError (EINVAL), as the CLI's other
 * bad arguments found after parsing (`--daemon`), so it prints as one line and exits 1.
 */
export function refuseOversize(flag: string, sizes: readonly number[], max: number, limit: string, why?: string): void {
  const bad = sizes.find((s) => s > max);
  if (bad !== undefined) throw new InvalidArgumentError(`${flag} ${bad}: larger than ${limit} (${max} bytes)${why === undefined ? '' : `: ${why}`}`);
}

/** Why UD and SRD stop at {@link DEVICE_MTU}, for {@link refuseOversize}. */
export const NO_SEGMENTATION = 'UD and SRD send each message as one packet';

/** Commander argument parser for `--cc`: delay, on (= delay) or off. */
export function ccOption(value: string): CcMode {
  try {
    return parseCcMode(value, '--cc');
  } catch {
    throw new CommanderArgError(`expected one of ${CC_WORDS.join(', ')} (on = delay), got "${value}"`);
  }
}

/** The SRD flags the rank-starting commands share. */
export interface SrdFlags {
  paths?: number;
  cc?: CcMode;
}

/** Adds `--paths` and `--cc` to a command that starts ranks. */
export function addSrdFlags(cmd: Command): Command {
  return cmd
    .option('--paths <k>', `SRD network paths each device sprays a peer's packets over (1..${MAX_PATHS}; default 4), passed as ${ENV_PATHS}`, intOption(1, MAX_PATHS))
    .option('--cc <mode>', `SRD congestion control: delay (on, the default: an RTT-driven window) or off, passed as ${ENV_CC}`, ccOption);
}

