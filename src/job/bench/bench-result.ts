// What a bench rank measures and prints, shared by the rank programs and the tables that show it.

/** The message tests (send/receive) and perftest's RDMA ones. */
export type BenchTest = 'lat' | 'bw' | 'write_lat' | 'write_bw' | 'read_lat' | 'read_bw';

/** True for the bare-socket bench types, `raw` and `raw-batched` (no device, no protocol). */
export function isRawType(type: string): boolean {
  return type === 'raw' || type === 'raw-batched';
}

/** True for the RDMA tests (ib_write_* / ib_read_*). */
export function isRdmaTest(test: string): boolean {
  return test.startsWith('write_') || test.startsWith('read_');
}

/**
 * One side of a connection as perftest's address lines show it: LID, QPN, PSN and GID for a
 * QP (with the RKey and virtual address an RDMA peer uses), host and port for raw UDP.
 */
export interface BenchAddress {
  qpn?: number;
  psn?: number;
  /** IPv6 text, as the device prints it. */
  gid?: string;
  rkey?: number;
  vaddr?: number;
  host?: string;
  port?: number;
}

/**
 * The facts a perftest banner and `--out_json`'s `test_info` report, as rank 0 knows them for
 * one transport of one test.
 */
export interface BenchSetup {
  /** The rank's device name (perftest's `Device`); null for raw UDP, which opens none. */
  device: string | null;
  /** The EFA generation the device emulates. */
  generation: string;
  /** Largest message the transport takes in one packet, bytes; null for raw UDP (no MTU of ours). */
  mtu: number | null;
  /** Operations the sender keeps outstanding: 1 for the latency tests, the window for bandwidth. */
  tx_depth: number;
  /**
   * Bandwidth tests: messages per progress report the sender gets (perftest's CQ moderation):
   * 1 where every send completes (SRD, RDMA), the receiver's ack interval for raw and UD.
   */
  cq_mod?: number;
  /** Read tests: reads kept outstanding (perftest's `Outstand reads`). */
  out_reads?: number;
  /** True when work requests go through the `wr*` API (RDMA), false for `postSend`. */
  wr_api: boolean;
  poll: 'event' | 'busy';
  /** Latency tests: rounds run first and left out of the figures. */
  warmup: number;
  local: BenchAddress;
  remote: BenchAddress;
}

/** One benchmark result as the rank prints it; `--json` reports it in perftest's names too. */
export interface BenchResult {
  type: string;
  /** lat, bw, or an RDMA test (write_lat, write_bw, read_lat, read_bw). */
  test: string;
  size: number;
  iters: number;
  /** Latency figures, µs: one-way (half a round trip), except read_lat's whole reads. */
  t_min_usec?: number;
  t_max_usec?: number;
  t_typical_usec?: number;
  t_avg_usec?: number;
  t_stdev_usec?: number;
  t_p99_usec?: number;
  t_p999_usec?: number;
  /** Bandwidth figures: MiB (2^20 bytes) per second, and millions of messages per second. */
  bw_peak_mbps?: number;
  bw_avg_mbps?: number;
  msg_rate_mpps?: number;
  retransmits?: number;
  lost?: number;
  /** Stream tests: messages the receiver got, and sends that completed with an error. */
  delivered?: number;
  send_errors?: number;
  ratio_to_raw?: number;
  /** A raw row beside an RDMA test: the datagram size it ran with, when smaller than `size`. */
  raw_size?: number;
  /** What the banner shows; absent from results made by hand. */
  setup?: BenchSetup;
}
