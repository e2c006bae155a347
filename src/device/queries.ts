import type { DeviceAttributes } from './attributes';

/** `ibv_port_state`: the one port is always up. */
export const PortState = { NOP: 0, DOWN: 1, INIT: 2, ARMED: 3, ACTIVE: 4, ACTIVE_DEFER: 5 } as const;

/** `enum ibv_mtu`. */
export const IbvMtu = { MTU_256: 1, MTU_512: 2, MTU_1024: 3, MTU_2048: 4, MTU_4096: 5 } as const;

/** What `queryPort` reports, as `ibv_port_attr` (the fields EFA fills). */
export interface PortAttributes {
  state: number;
  maxMtu: number;
  activeMtu: number;
  /** Largest message in bytes (the device MTU: SRD and UD messages are one packet). */
  maxMsgSz: number;
  gidTblLen: number;
  pkeyTblLen: number;
  lmc: number;
  maxVlNum: number;
  /** `ibv_port_attr.link_layer`: IBV_LINK_LAYER_UNSPECIFIED (0), as EFA reports. */
  linkLayer: number;
  /** 4X (2) and EDR (32), what EFA's driver reports. */
  activeWidth: number;
  activeSpeed: number;
  /** LinkUp. */
  physState: number;
}

/** What `efadvQueryDevice` reports, as `struct efadv_device_attr`. */
export interface EfadvDeviceAttributes {
  /** Always 0: no optional fields are defined. */
  compMask: number;
  maxSqWr: number;
  maxRqWr: number;
  maxSqSge: number;
  maxRqSge: number;
  inlineBufSize: number;
  inlineBufSizeEx: number;
  /** EfadvDeviceCaps bits. */
  deviceCaps: number;
  maxRdmaSize: number;
}

/** What `queryDeviceEx` reports: `ibv_device_attr_ex` (its base part, as queryDevice, plus the extended fields EFA fills). */
export interface DeviceAttributesEx extends DeviceAttributes {
  /** Local SGEs of an RDMA request (`max_sge_rd`). */
  maxSgeRd: number;
  maxPkeys: number;
  /** No atomics on EFA. */
  atomicCap: number;
  maxSrq: number;
}

export function portAttributes(a: DeviceAttributes): PortAttributes {
  return {
    state: PortState.ACTIVE,
    // The port reports the largest IB MTU enum; the SRD/UD message limit is maxMsgSz.
    maxMtu: IbvMtu.MTU_4096,
    activeMtu: IbvMtu.MTU_4096,
    maxMsgSz: a.maxMsgSize,
    gidTblLen: 1,
    pkeyTblLen: 1,
    lmc: 1,
    maxVlNum: 1,
    linkLayer: 0,
    activeWidth: 2,
    activeSpeed: 32,
    physState: 5,
  };
}

export function efadvAttributes(a: DeviceAttributes): EfadvDeviceAttributes {
  return {
    compMask: 0,
    maxSqWr: a.maxSqWr,
    maxRqWr: a.maxRqWr,
    maxSqSge: a.maxSqSge,
    maxRqSge: a.maxRqSge,
    inlineBufSize: a.maxInlineData,
    inlineBufSizeEx: a.maxInlineData,
    deviceCaps: a.deviceCaps,
    maxRdmaSize: a.maxRdmaSize,
  };
}

export function deviceAttributesEx(a: DeviceAttributes): DeviceAttributesEx {
  return { ...a, maxSgeRd: 1, maxPkeys: 1, atomicCap: 0, maxSrq: 0 };
}
