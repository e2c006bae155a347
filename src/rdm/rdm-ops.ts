import type { MemoryRegion } from '../device/memory-region';
import type { RdmPeer } from './rdm-peer';
import type { RdmProtocol } from './rdm-wire';
import type { ArrivedMessage, RecvCriteria } from './tag-matcher';

/** A send operation (the provider's TX entry), from post to completion. */
export class TxOp {
  proto: RdmProtocol = 'eager';
  /** The REQ packet has completed at the device (for long protocols: before data or the read). */
  rtmDone = false;
  rtmSent = false;
  /** Payload bytes put in packets, and of those the bytes whose packets completed. */
  sentBytes = 0;
  doneBytes = 0;
  /** Long-CTS: payload offset the receiver has granted up to. */
  granted = 0;
  /** Long-CTS: the receiver's id of the operation, from its CTS. */
  recvId = 0;
  /** Medium: the segment size planned at the first segment, and the remainder the last one adds. */
  segSize = 0;
  segLastExtra = 0;
  /** Packet slots this op owns (queued or at the device). */
  slots = 0;
  /** Long-read: the registered send buffer, and whether the EOR arrived. */
  mr: MemoryRegion | null = null;
  eorReceived = false;
  /** Waiting for the peer's handshake (to learn whether it can serve RDMA read). */
  awaitingHandshake = false;
  waitingForSlot = false;
  done = false;

  constructor(
    readonly id: number,
    readonly peer: RdmPeer,
    readonly buf: Uint8Array,
    readonly len: number,
    readonly tagged: boolean,
    readonly tagLo: number,
    readonly tagHi: number,
    readonly hasData: boolean,
    readonly dataLo: number,
    readonly dataHi: number,
    readonly context: unknown,
    readonly msgId: number,
  ) {}
}

/** A posted receive (the provider's RX entry) and, once matched, the message it takes. */
export class RxOp implements RecvCriteria {
  /** Set once matched: the message it receives. */
  peer: RdmPeer | null = null;
  proto: RdmProtocol = 'eager';
  msgId = 0;
  msgLen = 0;
  /** Bytes of the message arrived so far (all of it counts, even what does not fit). */
  received = 0;
  /** Long-CTS: bytes granted so far (the RTM's payload, then every CTS). */
  granted = 0;
  /** Long-CTS, long-read: the sender's operation id. */
  sendId = 0;
  srcAddr = -1;
  mtagLo = 0;
  mtagHi = 0;
  hasData = false;
  dataLo = 0;
  dataHi = 0;
  /** Long-read: the sender's region, and our registration of the buffer it is read into. */
  readAddr = 0;
  readKey = 0;
  mr: MemoryRegion | null = null;
  /** A CTS or EOR waits for a packet slot. */
  ctrlNeeded = 0;
  waitingForSlot = false;
  slots = 0;
  done = false;

  constructor(
    readonly id: number,
    readonly buf: Uint8Array,
    readonly tagged: boolean,
    readonly src: number,
    readonly tagLo: number,
    readonly tagHi: number,
    readonly ignoreLo: number,
    readonly ignoreHi: number,
    readonly context: unknown,
  ) {}
}

/** A message that arrived before a receive matched it. */
export class Unexpected implements ArrivedMessage {
  /** Bytes held: the eager payload or long-CTS's first chunk. */
  data: Buffer;
  /**
   * Medium: the segments arrived so far, each where it goes in the message. Kept as they came
   * (as the provider keeps the packets) rather than in a buffer of the length the header
   * claims, so what a message holds is what arrived, whatever its header says.
   */
  readonly segments: Array<{ offset: number; bytes: Buffer }> = [];
  received = 0;

  constructor(
    readonly peer: RdmPeer,
    readonly proto: RdmProtocol,
    readonly tagged: boolean,
    readonly tagLo: number,
    readonly tagHi: number,
    readonly msgId: number,
    readonly msgLen: number,
    readonly hasData: boolean,
    readonly dataLo: number,
    readonly dataHi: number,
    readonly sendId: number,
    readonly readAddr: number,
    readonly readKey: number,
    held: number,
  ) {
    this.data = Buffer.allocUnsafe(held);
  }

  /** The sender's fi_addr now: an address the application inserts after arrival still matches. */
  get srcAddr(): number {
    return this.peer.fiAddr;
  }
}

/** What a control packet a receive owes its sender is. */
export const CtrlNeed = { NONE: 0, CTS: 1, EOR: 2 } as const;
