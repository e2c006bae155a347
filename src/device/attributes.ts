import { InvalidArgumentError } from '../common/errors';

/**
 * Device attributes as `queryDevice()` returns them, named after `ibv_device_attr` and
 * `efadv_device_attr` fields in camelCase. Defaults are those of a typical EFA device, with
 * `maxPd` at 128 as on the first-generation device.
 */
export interface DeviceAttributes {
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

export const DEFAULT_ATTRIBUTES: Readonly<DeviceAttributes> = Object.freeze({
  vendorId: 0x1d0f,
  vendorPartId: 0xefa0,
  fwVer: '0.1.0-emu',
  maxQp: 256,
  maxQpWr: 4096,
  maxSqWr: 4096,
  maxRqWr: 32768,
  maxSge: 2,
  maxSqSge: 2,
  maxRqSge: 3,
  maxInlineData: 32,
  maxCq: 512,
  maxCqe: 32768,
  maxMr: 262144,
  maxMrSize: 2 ** 32,
  maxPd: 128,
  maxAh: 1024,
  mtu: 8192,
  maxMsgSize: 8192,
  physPortCnt: 1,
});

/** Largest MTU the wire allows: the payload length field is 16-bit and a datagram ≤ 65507. */
export const MAX_EMULATED_MTU = 65000;

/**
 * Merges user overrides onto the defaults, checking each one; the error names the option.
 */
export function resolveAttributes(overrides: Partial<DeviceAttributes> = {}): DeviceAttributes {
  const attrs: DeviceAttributes = { ...DEFAULT_ATTRIBUTES };
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) continue;
    if (!(key in DEFAULT_ATTRIBUTES)) throw new InvalidArgumentError(`attributes.${key}: unknown device attribute`);
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
