import path from 'node:path';

/*
 * The rank programs the job layer ships, as compiled files a launch can start. A library user
 * writing integration tests launches them as `efa-emu pingpong` / `bench` / `fi-*` do.
 */

/** `efa-emu pingpong`'s rank: arguments `ud|srd` then the ping-pong flags (`--size`, `--iters`, ...). */
export const PINGPONG_RANK_PROGRAM = path.join(__dirname, 'pingpong', 'pingpong-rank.js');
/** `efa-emu bench`'s rank (two ranks: rank 0 measures and prints `{"bench": ...}` lines). */
export const BENCH_RANK_PROGRAM = path.join(__dirname, 'bench', 'bench-rank.js');
/** `efa-emu fi-pingpong` / `fi-bw`'s rank (`--plan JSON`). */
export const FI_RANK_PROGRAM = path.join(__dirname, 'fi', 'fi-rank.js');
