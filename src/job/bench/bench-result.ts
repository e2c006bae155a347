// What a bench rank measures and prints, shared by the rank programs and the tables that show it.

/** The message tests (send/receive) and perftest's RDMA ones. */
export type BenchTest = 'lat' | 'bw' | 'write_lat' | 'write_bw' | 'read_lat' | 'read_bw';

/** True for the RDMA tests (ib_write_* / ib_read_*). */
export function isRdmaTest(test: string): boolean {
  return test.startsWith('write_') || test.startsWith('read_');
}

/** One benchmark result as the rank prints it and `--json` reports it. */
export interface BenchResult {
  type: string;
  /** lat, bw, or an RDMA test (write_lat, write_bw, read_lat, read_bw). */
  test: string;
  size: number;
  iters: number;
  t_min_usec?: number;
  t_max_usec?: number;
  t_typical_usec?: number;
  t_avg_usec?: number;
  t_stdev_usec?: number;
  t_p99_usec?: number;
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
}
