import { InvalidArgumentError } from '../common/errors';

/**
 * The EFA device generations, named after their PCI device ids (the kernel's efa_main.c
 * binds 0xefa0 .. 0xefa3), each with the attributes and efadv capabilities the emulated
 * device reports. README "Device generations" says which source each value follows and
 * which ones are the emulator's choice (AWS does not publish every limit).
 */

/** `efadv_device_attr.device_caps` bits, as `enum efadv_device_attr_caps` in efadv.h. */
export const EfadvDeviceCaps = {
  RDMA_READ: 1 << 0,
  RNR_RETRY: 1 << 1,
  CQ_WITH_SGID: 1 << 2,
  RDMA_WRITE: 1 << 3,
  UNSOLICITED_WRITE_RECV: 1 << 4,
} as const;

export type GenerationName = 'efa0' | 'efa1' | 'efa2' | 'efa3';
export const GENERATION_NAMES: readonly GenerationName[] = ['efa0', 'efa1', 'efa2', 'efa3'];
/** The newest generation: what a device is unless told otherwise. */
export const DEFAULT_GENERATION: GenerationName = 'efa3';

/** What differs between generations; everything else is common (see attributes.ts). */
export interface GenerationProfile {
  readonly name: GenerationName;
  /** PCI device id, reported as `vendorPartId`. */
  readonly vendorPartId: number;
  /** Instances the generation came with (for the README and `status`). */
  readonly firstSeenOn: string;
  readonly deviceCaps: number;
  /** Largest RDMA read/write in bytes (efadv `max_rdma_size`); 0 without RDMA. */
  readonly maxRdmaSize: number;
  readonly maxPd: number;
  readonly maxQp: number;
  readonly maxCq: number;
  readonly maxAh: number;
  readonly maxSqWr: number;
  readonly maxRqWr: number;
  readonly maxSqSge: number;
  readonly maxRqSge: number;
  /** Inline bytes per send (efadv `inline_buf_size`). */
  readonly maxInlineData: number;
}

const C = EfadvDeviceCaps;

/**
 * Limits of the generations after the first: the one public set of real values (a capture of an
 * 0xefa1 device, see the README); later generations' limits are not public and are kept alike.
 */
const LIMITS = {
  maxPd: 256,
  maxQp: 256,
  maxCq: 512,
  maxAh: 1024,
  maxSqWr: 4096,
  maxRqWr: 32768,
  maxSqSge: 2,
  maxRqSge: 3,
  maxInlineData: 32,
} as const;

export const GENERATIONS: Readonly<Record<GenerationName, GenerationProfile>> = Object.freeze({
  // The seed's device: RNR retry and the sender GID in completions, no RDMA, 128 PDs.
  efa0: Object.freeze({ ...LIMITS, name: 'efa0', vendorPartId: 0xefa0, firstSeenOn: 'c5n, p3dn (2018)', deviceCaps: C.RNR_RETRY | C.CQ_WITH_SGID, maxRdmaSize: 0, maxPd: 128 }),
  efa1: Object.freeze({ ...LIMITS, name: 'efa1', vendorPartId: 0xefa1, firstSeenOn: 'p4d (2020)', deviceCaps: C.RDMA_READ | C.RNR_RETRY | C.CQ_WITH_SGID, maxRdmaSize: 1 << 30 }),
  efa2: Object.freeze({
    ...LIMITS,
    name: 'efa2',
    vendorPartId: 0xefa2,
    firstSeenOn: 'trn1, hpc7g, p5 (2022)',
    deviceCaps: C.RDMA_READ | C.RNR_RETRY | C.CQ_WITH_SGID | C.RDMA_WRITE,
    maxRdmaSize: 1 << 30,
  }),
  efa3: Object.freeze({
    ...LIMITS,
    name: 'efa3',
    vendorPartId: 0xefa3,
    firstSeenOn: 'p5en, trn2 (2024)',
    deviceCaps: C.RDMA_READ | C.RNR_RETRY | C.CQ_WITH_SGID | C.RDMA_WRITE | C.UNSOLICITED_WRITE_RECV,
    maxRdmaSize: 1 << 30,
  }),
});

/** The profile `name` names (`efa0` .. `efa3`, or the PCI id `0xefa0` .. `0xefa3`). */
export function generationProfile(name: string, what = 'generation'): GenerationProfile {
  const m = /^(?:0x)?efa([0-3])$/i.exec(name);
  if (m === null) throw new InvalidArgumentError(`${what}: unknown EFA generation "${name}" (one of ${GENERATION_NAMES.join(', ')})`);
  return GENERATIONS[`efa${m[1]}` as GenerationName];
}

/** The capability names set in `caps`, for messages and `status`. */
export function capNames(caps: number): string[] {
  return Object.entries(EfadvDeviceCaps)
    .filter(([, bit]) => (caps & bit) !== 0)
    .map(([name]) => name);
}
