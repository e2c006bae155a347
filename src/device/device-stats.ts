/**
 * Per-device counters, named after the EFA driver's hardware counters (`rdma statistic
 * show`) where one exists, and `rx_drop_*` / `tx_drop_*` for the emulator's own drop causes.
 * Plain numeric fields so the hot path increments them without lookups.
 */
export class DeviceStats {
  tx_pkts = 0;
  tx_bytes = 0;
  rx_pkts = 0;
  rx_bytes = 0;
  /** Every received packet that was not delivered, whatever the cause (sum of rx_drop_*). */
  rx_drops = 0;
  send_wrs = 0;
  send_bytes = 0;
  recv_wrs = 0;
  recv_bytes = 0;
  retrans_pkts = 0;
  retrans_bytes = 0;
  retrans_timeout_events = 0;
  unresponsive_remote_events = 0;
  unreachable_remote_events = 0;
  rnr_sent = 0;
  rnr_received = 0;
  rnr_retry_exceeded = 0;
  /** RNR-delayed packets sent again once their back-off passed. */
  rnr_retries = 0;
  acks_sent = 0;
  acks_received = 0;
  /** Acks carried by data packets going the other way instead of packets of their own. */
  acks_piggybacked = 0;
  cq_overruns = 0;
  /** RDMA counters, named as the EFA driver's hw stats. */
  rdma_read_wrs = 0;
  rdma_read_bytes = 0;
  rdma_read_wr_err = 0;
  /** Bytes this device sent back as the target of peers' reads. */
  rdma_read_resp_bytes = 0;
  rdma_write_wrs = 0;
  rdma_write_bytes = 0;
  rdma_write_wr_err = 0;
  /** Bytes placed in this device's memory by peers' writes. */
  rdma_write_recv_bytes = 0;
  /** RDMA requests refused at this device as target: unknown rkey, other PD, no access, out of bounds. */
  rdma_remote_access_errors = 0;
  /** Read data that arrived for a read no longer waited for (failed or flushed). */
  rdma_read_resp_stale = 0;
  /** Datagrams shorter than a header or with a wrong length field. */
  rx_drop_bad_header = 0;
  rx_drop_bad_checksum = 0;
  /** Datagrams of another protocol or version. */
  rx_drop_bad_version = 0;
  rx_drop_unknown_qpn = 0;
  rx_drop_qkey_mismatch = 0;
  /** The QP exists but is not in a state that receives (RESET, INIT, ERR) or is of another type. */
  rx_drop_qp_state = 0;
  /** UD: no receive was posted. */
  rx_drop_no_recv_wr = 0;
  /** From a device of another fabric (GID fabric id differs). */
  rx_drop_foreign_fabric = 0;
  rx_drop_duplicate = 0;
  /** SRD packets of a sender session that was replaced by a newer one. */
  rx_drop_stale = 0;
  /** SRD packets too far ahead of the receive window. */
  rx_drop_window = 0;
  /** SRD packets meant for an earlier incarnation of this device (a restarted process). */
  rx_drop_wrong_incarnation = 0;
  /**
   * Packets whose source endpoint is not the one the fabric knows for the GID they claim
   * (spoofed, or from a peer that moved and is being looked up again).
   */
  rx_drop_unknown_endpoint = 0;
  /**
   * From a GID first seen in its own packets, before the control plane confirmed its endpoint
   * (SRD: the sender retransmits; UD: more than the few held meanwhile, or never confirmed).
   */
  rx_drop_unverified = 0;
  /** UD datagrams held while their sender's endpoint was being confirmed (then delivered or dropped). */
  rx_held_unverified = 0;
  /** Dropped by the fault injector on the way in or out. */
  rx_drop_injected = 0;
  tx_drop_injected = 0;
  tx_errors = 0;

  /** Counts a receive drop under `cause` and in the rx_drops total. */
  drop(cause: RxDropCause): void {
    this[cause]++;
    this.rx_drops++;
  }

  toJSON(): Record<string, number> {
    return { ...this } as unknown as Record<string, number>;
  }
}

export type RxDropCause =
  | 'rx_drop_bad_header'
  | 'rx_drop_bad_checksum'
  | 'rx_drop_bad_version'
  | 'rx_drop_unknown_qpn'
  | 'rx_drop_qkey_mismatch'
  | 'rx_drop_qp_state'
  | 'rx_drop_no_recv_wr'
  | 'rx_drop_foreign_fabric'
  | 'rx_drop_duplicate'
  | 'rx_drop_stale'
  | 'rx_drop_window'
  | 'rx_drop_wrong_incarnation'
  | 'rx_drop_unknown_endpoint'
  | 'rx_drop_unverified'
  | 'rx_drop_injected';
