import type { AddressHandle } from '../device/address-handle';
import type { RawAddress } from './raw-address';

/** `fi_addr` of no address: a receive from any source, or a sender not in the AV. */
export const FI_ADDR_UNSPEC = -1;
export const FI_ADDR_NOTAVAIL = -1;

/**
 * What the endpoint knows of one remote endpoint: its address, whether the handshake has been
 * exchanged, the message ids of each direction, and the packets waiting on it (while its AH is
 * being created or an RNR back-off runs). One per remote endpoint, found by AH number and QPN.
 */
export class RdmPeer {
  /** The AV slot the application inserted this peer at, or FI_ADDR_NOTAVAIL (learnt from a packet). */
  fiAddr = FI_ADDR_NOTAVAIL;
  ah: AddressHandle | null = null;
  /** Creating the AH failed: nothing can be sent to this peer. */
  ahError: Error | null = null;
  /** We sent our handshake. */
  handshakeSent = false;
  /** Its handshake arrived: `features` is valid and REQs need no raw-address header. */
  handshakeReceived = false;
  features = 0;
  /** The next message id this endpoint sends to the peer (send-after-send order). */
  nextTxMsgId = 0;
  /** The next message id expected from it, when receives are ordered. */
  nextRxMsgId = 0;
  /** RNR back-off: nothing is sent before this time; `rnrBackoffMs` doubles per RNR. */
  backoffUntil = 0;
  rnrBackoffMs = 0;
  /** Sending to it failed for good (its EFA status); cleared by a later successful send. */
  failedStatus = 0;
  /** When its last packet arrived (liveness probes are sent only after a quiet spell). */
  lastHeardAt = 0;
  /** Next liveness probe (a handshake re-sent) while operations wait on it. */
  probeAt = 0;
  /** Packet slots queued for it, in order (a ring of slot indices). */
  readonly queue: number[] = [];
  queueHead = 0;
  /** Medium messages from it partly arrived, by message id (a receive or an unexpected entry). */
  readonly partial = new Map<number, object>();
  /** Ordered receives: REQ packets that arrived ahead of their turn, copied, by message id. */
  readonly reorder = new Map<number, Buffer[]>();
  /** Operations waiting on its answers (a CTS, data, an EOR, its handshake). */
  readonly waitingOps = new Set<object>();
  /** A liveness probe is at the device (do not send another). */
  probing = false;
  /** Our handshake must go out once a packet slot is free. */
  handshakeNeeded = false;
  /** PEER_ERRORs owed to it, as (op_id, ref_kind, prov_errno) triples, sent as slots free. */
  readonly peerErrors: number[] = [];
  /** Its messages it told us failed (PEER_ERROR MSG_ID): late packets of them are dropped, and ordered receives skip them. */
  readonly aborted = new Set<number>();
  /** On the endpoint's list of things waiting for a packet slot. */
  waitingForSlot = false;

  constructor(
    readonly addr: RawAddress,
    /** The raw address as bytes (for the header of REQs before the handshake). */
    readonly raw: Uint8Array,
  ) {}

  /** Packets queued for the peer. */
  get queued(): number {
    return this.queue.length - this.queueHead;
  }
}
