import { InvalidArgumentError } from '../common/errors';
import { DEFAULT_GENERATION, generationProfile, type GenerationName, type GenerationProfile } from './generations';

/**
 * Device attributes as `queryDevice()` returns them, named after `ibv_device_attr` and
 * `efadv_device_attr` fields in camelCase. The generation's profile (generations.ts) sets
 * the limits and capabilities; the rest is common to every generation.
 */
export interface DeviceAttributes {
  /** The EFA generation the device emulates (`efa0` .. `efa3`). */
  generation: GenerationName;
  /** efadv `device_caps` (EfadvDeviceCaps bits). */
  deviceCaps: number;
  /** Largest RDMA read or write in bytes (efadv `max_rdma_size`); 0 when the device has no RDMA. */
  maxRdmaSize: number;
  /** Vendor id of Amazon (0x1d0f), as real EFA devices report. */
  vendorId: number;
  vendorPartId: number;
  fwVer: string;
  maxQp: number;
  maxQpWr: number;
  maxSqWr: number;
  maxRqWr: number;
  maxSge: number;
  maxSqSge: number;
  maxRqSge: number;
  maxInlineData: number;
  maxCq: number;
  maxCqe: number;
  maxMr: number;
  maxMrSize: number;
  maxPd: number;
  maxAh: number;
  /** Port MTU in bytes (payload of one packet). */
  mtu: number;
  /** Largest message: SRD and UD never segment, so this equals `mtu`. */
  maxMsgSize: number;
  physPortCnt: number;
}

/** The attributes of a device of generation `p`. */
export function profileAttributes(p: GenerationProfile): DeviceAttributes {
  return {
    generation: p.name,
    deviceCaps: p.deviceCaps,
    maxRdmaSize: p.maxRdmaSize,
    vendorId: 0x1d0f,
    vendorPartId: p.vendorPartId,
    fwVer: '0.1.0-emu',
    maxQp: p.maxQp,
    // The kernel reports the smaller queue's limit (min of max_sq_depth and max_rq_depth).
    maxQpWr: Math.min(p.maxSqWr, p.maxRqWr),
    maxSqWr: p.maxSqWr,
    maxRqWr: p.maxRqWr,
    maxSge: Math.min(p.maxSqSge, p.maxRqSge),
    maxSqSge: p.maxSqSge,
    maxRqSge: p.maxRqSge,
    maxInlineData: p.maxInlineData,
    maxCq: p.maxCq,
    maxCqe: 32768,
    maxMr: 262144,
    maxMrSize: 2 ** 32,
    maxPd: p.maxPd,
    maxAh: p.maxAh,
    mtu: 8192,
    maxMsgSize: 8192,
    physPortCnt: 1,
  };
}

/** The attributes of the default (newest) generation. */
export const DEFAULT_ATTRIBUTES: Readonly<DeviceAttributes> = Object.freeze(profileAttributes(generationProfile(DEFAULT_GENERATION)));

/** Attributes that come from the generation and cannot be overridden one by one. */
const FROM_GENERATION = new Set(['generation', 'deviceCaps', 'maxRdmaSize', 'vendorPartId']);

/** Largest MTU the wire allows: the payload length field is 16-bit and a datagram ≤ 65507. */
export const MAX_EMULATED_MTU = 65000;

/**
 * The attributes of a device of `generation` with the user's overrides, each one checked;
 * the error names the option.
 */
export function resolveAttributes(overrides: Partial<DeviceAttributes> = {}, generation: string = DEFAULT_GENERATION): DeviceAttributes {
  const attrs: DeviceAttributes = profileAttributes(generationProfile(generation));
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) continue;
    if (!(key in DEFAULT_ATTRIBUTES)) throw new InvalidArgumentError(`attributes.${key}: unknown device attribute`);
    if (FROM_GENERATION.has(key)) {
      if (value === attrs[key as keyof DeviceAttributes]) continue;
      throw new InvalidArgumentError(`attributes.${key}: set by the generation (choose one with the generation option)`);
    }
    const k = key as keyof DeviceAttributes;
    if (typeof DEFAULT_ATTRIBUTES[k] === 'number') {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
        throw new InvalidArgumentError(`attributes.${key}: must be a positive integer, got ${String(value)}`);
      }
    } else if (typeof value !== typeof DEFAULT_ATTRIBUTES[k]) {
      throw new InvalidArgumentError(`attributes.${key}: must be a ${typeof DEFAULT_ATTRIBUTES[k]}`);
    }
    (attrs as unknown as Record<string, unknown>)[key] = value;
  }
  if (overrides.mtu !== undefined && overrides.maxMsgSize === undefined) attrs.maxMsgSize = attrs.mtu;
  if (attrs.mtu > MAX_EMULATED_MTU) {
    throw new InvalidArgumentError(`attributes.mtu: at most ${MAX_EMULATED_MTU} bytes, got ${attrs.mtu}`);
  }
  if (attrs.maxMsgSize > attrs.mtu) {
    throw new InvalidArgumentError(`attributes.maxMsgSize: SRD and UD do not segment, so it cannot exceed mtu (${attrs.mtu})`);
  }
  return attrs;
}
