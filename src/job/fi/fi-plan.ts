/*
 * What `efa-emu fi-pingpong` / `fi-bw` and their ranks (fi-rank.ts) tell each other: the plan
 * the command passes as --plan, and the JSON lines the client prints back. Kept apart from
 * fi-rank.ts, which runs as soon as it is loaded.
 */
/** The RDM message protocols, in the order the endpoint picks them by size. */
export const FI_PROTOCOLS = ['eager', 'medium', 'longcts', 'longread'] as const;
export type FiProtocol = (typeof FI_PROTOCOLS)[number];

/** What the command asks the ranks to run. */
export interface FiPlan {
  test: 'pingpong' | 'bw';
  sizes: number[];
  /** Iterations of each size (timed; warm-up comes on top). */
  iters: number[];
  /** bw: the window of each size. */
  windows: number[];
  warmup: number;
  verify: boolean;
  tagged: boolean;
  /** spin: poll the CQ, the endpoint busy-polling its device; sread: wait on the CQ, event progress. */
  comp: 'spin' | 'sread';
  /** Longest wait for any completion before the run fails. */
  timeoutMs: number;
}

/** What the client reports for one size. */
export interface FiSizeResult {
  size: number;
  iters: number;
  warmup: number;
  window: number;
  elapsedUs: number;
  /** Data messages the client sent by protocol during this size (warm-up included). */
  protocols: Partial<Record<FiProtocol, number>>;
  /** Data messages each side checked byte for byte. */
  verified: { client: number; server: number };
}

/** The client's last line: its endpoint's counters. */
export interface FiEndReport {
  stats: Record<string, number>;
}

/** fabtests' FT_RMA_SYNC_MSG_BYTES: the bandwidth test's end-of-window ack. */
export const ACK_BYTES = 4;
/** Largest -W. */
export const MAX_WINDOW = 4096;
