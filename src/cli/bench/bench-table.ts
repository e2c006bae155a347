import { parseGid } from '../../common/gid';
import { isRawType, type BenchAddress, type BenchResult, type BenchSetup } from '../../job/bench/bench-result';
import type { RxdResult } from '../../job/bench/rxd-baseline';

export { isRdmaTest, type BenchResult, type BenchSetup, type BenchTest } from '../../job/bench/bench-result';

// perftest's strings (linux-rdma/perftest, src/perftest_parameters.h: RESULT_LINE, RESULT_FMT,
// RESULT_FMT_LAT; src/perftest_parameters.c: ctx_print_test_info). They are reproduced to the
// character because scripts find the tables by them.

/** perftest's RESULT_LINE: 87 dashes, around the banner and each table. */
export const RESULT_LINE = '-'.repeat(87);

/** perftest's latency header (RESULT_FMT_LAT), trailing space included. */
export const LAT_HEADER = ' #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] ';

/** perftest's bandwidth header (RESULT_FMT), MiB/sec since perftest 24.07 (before: MB/sec, also 2^20 bytes). */
export const BW_HEADER = ' #bytes     #iterations    BW peak[MiB/sec]    BW average[MiB/sec]   MsgRate[Mpps]';

/** What the command knows of a run beyond the results: the devices' faults. */
export interface BenchRunInfo {
  fault?: string | null;
}

/**
 * Adds `ratio_to_raw` to every non-raw result that has a raw result of the same test and size:
 * t_typical / raw's for latency (lower is better), message rate / raw's for bandwidth (higher
 * is better).
 */
export function addRatios(results: BenchResult[]): void {
  for (const r of results) {
    if (r.type === 'raw') {
      r.ratio_to_raw = 1;
      continue;
    }
    const raw = results.find((x) => x.type === 'raw' && x.test === r.test && x.size === r.size);
    if (raw === undefined) continue;
    const lat = r.test.endsWith('lat');
    const bw = bwRatioField(r.test);
    const mine = lat ? r.t_typical_usec : r[bw];
    const base = lat ? (raw.t_typical_usec === undefined ? undefined : raw.t_typical_usec * rawLatencyFactor(r.test)) : raw[bw];
    if (mine !== undefined && base !== undefined && base > 0) r.ratio_to_raw = Math.round((mine / base) * 1000) / 1000;
  }
}

// RDMA streams move more bytes per operation than a datagram holds: compare bytes per second.
function bwRatioField(test: string): 'msg_rate_mpps' | 'bw_avg_mbps' {
  return test === 'bw' ? 'msg_rate_mpps' : 'bw_avg_mbps';
}

// A read's time is a whole round trip; raw latency rows are half of one (perftest's way).
function rawLatencyFactor(test: string): number {
  return test === 'read_lat' ? 2 : 1;
}

/** perftest's test name (its banner title, `_` for spaces in --out_json's `test`). */
export function perftestTitle(test: string, type: string): string {
  const lat = test.endsWith('lat');
  // The raw baseline of an RDMA test runs the message test, so its table is a Send table.
  const verb = isRawType(type) || test === 'lat' || test === 'bw' ? 'Send' : test === 'write_lat' ? 'RDMA_Write_imm' : test.startsWith('write') ? 'RDMA_Write' : 'RDMA_Read';
  return `${verb} ${lat ? 'Latency' : 'BW'} Test`;
}

/** What a latency table's figures are: one-way unless a whole read is timed, as perftest. */
export function latencyUnit(test: string, type: string): string {
  return test === 'read_lat' && !isRawType(type) ? 'usec, a whole RDMA read (one round trip)' : 'usec, one-way (half a round trip)';
}

/** What a bandwidth table's figures are. */
export const BW_UNIT = 'one-way, MiB/sec (2^20 bytes a second); MsgRate in Mpps (10^6 messages a second)';

function transportType(type: string): string {
  if (type === 'raw-batched') return 'raw UDP (node:dgram), batched as the devices batch';
  return type === 'raw' ? 'raw UDP (node:dgram)' : 'EFA (efa-emu, over UDP)';
}

function connectionType(type: string): string {
  return isRawType(type) ? 'UDP' : type.toUpperCase();
}

function deviceText(type: string, setup: BenchSetup | undefined): string {
  if (isRawType(type)) return 'none (a node:dgram socket)';
  if (setup === undefined) return '-';
  return `${setup.device ?? '-'} (efa-emu ${setup.generation})`;
}

// C's printf as perftest uses it, so that patterns written for perftest's lines match ours:
// `%-N...` pads on the right, and `%#0Nx` leaves the 0x off a zero.
function left(v: string, width: number): string {
  return v.padEnd(width);
}

function fixed(v: number | undefined, digits: number, width: number): string {
  return left((v ?? 0).toFixed(digits), width);
}

function cHex(v: number, width: number): string {
  return v === 0 ? '0'.repeat(width) : `0x${v.toString(16).padStart(width - 2, '0')}`;
}

/** A latency row in perftest's REPORT_FMT_LAT widths (its tabs included). */
export function latencyRow(r: BenchResult): string {
  const size = r.raw_size ?? r.size;
  return (
    ` ${left(String(size), 7)} ${r.iters}          ${fixed(r.t_min_usec, 2, 7)}        ${fixed(r.t_max_usec, 2, 7)}      ${fixed(r.t_typical_usec, 2, 7)}  \t       ` +
    `${fixed(r.t_avg_usec, 2, 7)}     \t${fixed(r.t_stdev_usec, 2, 7)}\t\t${fixed(r.t_p99_usec, 2, 7)} \t\t${fixed(r.t_p999_usec, 2, 7)}`
  );
}

/** A bandwidth row in perftest's REPORT_FMT widths. */
export function bandwidthRow(r: BenchResult): string {
  const size = r.raw_size ?? r.size;
  return ` ${left(String(size), 7)}    ${left(String(r.iters), 10)}       ${fixed(r.bw_peak_mbps, 2, 7)}            ${fixed(r.bw_avg_mbps, 2, 7)}\t\t     ${fixed(r.msg_rate_mpps, 6, 7)}`;
}

/** perftest's address line (BASIC_ADDR_FMT, with READ_FMT and RDMA_FMT for RDMA) and GID line; raw UDP's host and port. */
function addressLines(side: 'local' | 'remote', a: BenchAddress, test: string, setup: BenchSetup): string[] {
  if (a.port !== undefined) return [` ${side} address: UDP ${a.host ?? '127.0.0.1'} port ${a.port}`];
  if (a.qpn === undefined) return [];
  let line = ` ${side} address: LID ${cHex(0, 4)} QPN ${cHex(a.qpn, 6)} PSN ${cHex(a.psn ?? 0, 6)}`;
  if (a.rkey !== undefined) {
    if (test.startsWith('read')) line += ` OUT ${cHex(setup.out_reads ?? 1, 4)}`;
    line += ` RKey ${cHex(a.rkey, 8)} VAddr ${cHex(a.vaddr ?? 0, 16)}`;
  }
  const out = [line];
  if (a.gid !== undefined) {
    // perftest prints each GID byte as a decimal (%02d), not the IPv6 hex of ibv_devinfo.
    out.push(` GID: ${Array.from(parseGid(a.gid), (b) => String(b).padStart(2, '0')).join(':')}`);
  }
  return out;
}

/**
 * The banner perftest prints before a table (ctx_print_test_info), with the lines that apply
 * here and the facts of this run, then the address lines and the header.
 */
function banner(rows: BenchResult[], run: BenchRunInfo): string[] {
  const first = rows[0];
  const { test, type } = first;
  const setup = first.setup;
  const lat = test.endsWith('lat');
  const rdmaOp = !isRawType(type) && (test.startsWith('write') || test.startsWith('read'));
  const out = [RESULT_LINE, `                    ${perftestTitle(test, type)}`];
  out.push(` Dual-port       : OFF\t\tDevice         : ${deviceText(type, setup)}`);
  out.push(` Number of qps   : 1\t\tTransport type : ${transportType(type)}`);
  out.push(` Connection type : ${connectionType(type)}\t\tUsing SRQ      : OFF`);
  if (!isRawType(type)) out.push(` ibv_wr* API     : ${rdmaOp ? 'ON' : 'OFF'}`);
  if (setup !== undefined) {
    out.push(` TX depth        : ${setup.tx_depth}`);
    if (setup.cq_mod !== undefined) out.push(` CQ Moderation   : ${setup.cq_mod}${setup.cq_mod > 1 ? ' (a receiver ack per this many messages)' : ''}`);
  }
  out.push(` Mtu             : ${type === 'raw' ? 'none (a datagram a message)' : type === 'raw-batched' ? 'none (a run of messages packed per datagram, up to 65000 B)' : `${setup?.mtu ?? '-'}[B]`}`);
  // An EFA port's link layer is unspecified, which perftest prints as IB.
  out.push(` Link type       : ${isRawType(type) ? 'UDP/IPv4 loopback' : 'IB'}`);
  if (rdmaOp && test.startsWith('read')) out.push(` Outstand reads  : ${setup?.out_reads ?? '-'}`);
  else out.push(' Max inline data : 0[B]');
  out.push(' rdma_cm QPs\t : OFF');
  out.push(' Data ex. method : efa-emu daemon');
  if (setup !== undefined) out.push(` Poll mode       : ${setup.poll === 'event' ? 'event (sleep until a completion event)' : 'busy (spin on pollCq)'}`);
  const warmup = setup?.warmup ?? 0;
  out.push(` Iterations      : ${first.iters}${warmup > 0 ? ` measured, after ${warmup} warm-up rounds left out` : ''}`);
  out.push(lat ? ` Latency unit    : ${latencyUnit(test, type)}` : ` BW unit         : ${BW_UNIT}`);
  if (isRawType(type)) {
    if (test !== 'lat' && test !== 'bw') out.push(` Baseline for    : ${perftestTitle(test, 'srd')} (#bytes: the datagram sent)`);
    if (run.fault) out.push(' Faults          : none (raw UDP is the fault-free baseline)');
  } else if (run.fault) out.push(` Faults          : ${run.fault}`);
  out.push(RESULT_LINE);
  if (setup !== undefined) {
    const addr = [...addressLines('local', setup.local, test, setup), ...addressLines('remote', setup.remote, test, setup)];
    if (addr.length > 0) out.push(...addr, RESULT_LINE);
  }
  out.push(lat ? LAT_HEADER : BW_HEADER);
  return out;
}

/** Results grouped per (test, transport), in the order they came. */
function groups(results: BenchResult[]): BenchResult[][] {
  const byKey = new Map<string, BenchResult[]>();
  for (const r of results) {
    const key = `${r.test}/${r.type}`;
    const g = byKey.get(key);
    if (g === undefined) byKey.set(key, [r]);
    else g.push(r);
  }
  return [...byKey.values()];
}

/**
 * Formats results as perftest prints them: one table per transport (per test), each after its
 * banner, rows in perftest's widths; then what perftest has no column for (ratios to raw UDP,
 * retransmissions, losses), below the tables so they stay parseable as perftest output.
 */
export function formatTables(results: BenchResult[], run: BenchRunInfo = {}): string {
  const out: string[] = [];
  for (const rows of groups(results)) {
    out.push(...banner(rows, run));
    const lat = rows[0].test.endsWith('lat');
    for (const r of rows) out.push(lat ? latencyRow(r) : bandwidthRow(r));
    out.push(RESULT_LINE);
  }
  out.push(...summary(results));
  return `${out.join('\n')}\n`;
}

/**
 * The same-run libfabric rxd figures (`udp;ofi_rxd` fi_pingpong), after the tables: each size's
 * one-way average, and the SRD and raw rows of that size as multiples of it; or why there are none.
 */
export function formatRxd(rxd: { results: RxdResult[]; errors: string[] } | { skipped: string }, results: BenchResult[]): string {
  const out = [" libfabric udp;ofi_rxd (fi_pingpong -p 'udp;ofi_rxd' -e rdm, same run; usec/xfer: one-way, an average):"];
  if ('skipped' in rxd) {
    out.push(`   not measured: ${rxd.skipped}`);
    return `${out.join('\n')}\n`;
  }
  for (const x of rxd.results) {
    const vs = results
      .filter((r) => r.test === 'lat' && r.size === x.size && r.t_avg_usec !== undefined)
      .map((r) => `${r.type} t_avg ${(r.t_avg_usec as number).toFixed(2)} usec = ${((r.t_avg_usec as number) / x.usec_per_xfer).toFixed(3)} x rxd`);
    out.push(`   ${x.size} B: ${x.usec_per_xfer.toFixed(2)} usec/xfer over ${x.iters} iterations${vs.length > 0 ? `; ${vs.join(', ')}` : ''}`);
  }
  for (const e of rxd.errors) out.push(`   not measured: ${e}`);
  return `${out.join('\n')}\n`;
}

function sizeText(r: BenchResult): string {
  return `${r.type} ${r.size} B`;
}

/** Ratios to raw UDP and the transport's own events, each line naming its units. */
function summary(results: BenchResult[]): string[] {
  const ratios: string[] = [];
  const notes: string[] = [];
  for (const r of results) {
    if (r.type !== 'raw' && r.ratio_to_raw !== undefined) {
      const raw = results.find((x) => x.type === 'raw' && x.test === r.test && x.size === r.size);
      if (raw !== undefined) {
        // Beside the batched harness: what the protocol itself costs, batching aside.
        const batched = r.type === 'raw-batched' ? undefined : results.find((x) => x.type === 'raw-batched' && x.test === r.test && x.size === r.size);
        const vsBatched = batched === undefined || batched.ratio_to_raw === undefined || r.ratio_to_raw === undefined ? '' : `; ${(r.ratio_to_raw / batched.ratio_to_raw).toFixed(3)} x raw-batched`;
        ratios.push(`   ${sizeText(r)}: ${ratioText(r, raw)}${vsBatched}`);
      }
    }
    if ((r.retransmits ?? 0) > 0) notes.push(`   ${sizeText(r)}: retransmitted packets: ${r.retransmits}`);
    if ((r.lost ?? 0) > 0) notes.push(`   ${sizeText(r)}: rounds lost and resent (left out of the figures): ${r.lost}`);
    if (r.delivered !== undefined && r.delivered < r.iters) notes.push(`   ${sizeText(r)}: messages delivered (BW average and MsgRate count these): ${r.delivered} of ${r.iters}`);
    if ((r.send_errors ?? 0) > 0) notes.push(`   ${sizeText(r)}: operations completed with an error: ${r.send_errors}`);
  }
  const out: string[] = [];
  if (ratios.length > 0) out.push(' ratio to raw UDP (ratio_to_raw, same run; latency: lower is better, bandwidth: higher):', ...ratios);
  if (notes.length > 0) out.push(' transport events:', ...notes);
  return out;
}

function ratioText(r: BenchResult, raw: BenchResult): string {
  const ratio = (r.ratio_to_raw as number).toFixed(3);
  if (r.test.endsWith('lat')) {
    const mine = `t_typical ${fixed(r.t_typical_usec, 2, 0)} usec ${r.test === 'read_lat' ? '(a whole read, one round trip)' : 'one-way'}`;
    const rawT = raw.t_typical_usec ?? 0;
    const theirs = r.test === 'read_lat' ? `round trip ${(rawT * 2).toFixed(2)} usec (2 x ${rawT.toFixed(2)} usec one-way)` : `${rawT.toFixed(2)} usec one-way`;
    return `${mine} = ${ratio} x raw UDP's ${theirs}${raw.raw_size !== undefined ? ` (${raw.raw_size} B datagrams)` : ''}`;
  }
  if (bwRatioField(r.test) === 'msg_rate_mpps') return `MsgRate ${fixed(r.msg_rate_mpps, 6, 0)} Mpps = ${ratio} x raw UDP's ${fixed(raw.msg_rate_mpps, 6, 0)} Mpps`;
  return `BW average ${fixed(r.bw_avg_mbps, 2, 0)} MiB/sec = ${ratio} x raw UDP's ${fixed(raw.bw_avg_mbps, 2, 0)} MiB/sec${raw.raw_size !== undefined ? ` (${raw.raw_size} B datagrams)` : ''}`;
}

/** One element of `--json`'s `results`: a perftest --out_json document, and the fields of earlier versions. */
export interface BenchJsonEntry {
  /** perftest's `test_info`, with the keys that apply here, and ours (lower case). */
  test_info: Record<string, string | number | null>;
  /** perftest's `results` (MsgSize, n_iterations, t_* / BW_* ...), and ours (type, retransmits, ratio_to_raw, ...). */
  results: Record<string, string | number>;
  [legacy: string]: unknown;
}

/**
 * `--json`'s document. Each element of `results` is what perftest's `--out_json` writes for
 * one test (`{"test_info": {...}, "results": {...}}`, perftest's key names), one per
 * transport and size, plus, for scripts written against earlier versions, the flat fields
 * the bench used to print (`type`, `size`, `t_typical_usec`, `bw_avg_mbps`, ...).
 */
export function toJson(test: string, poll: string, fault: string | null, results: BenchResult[]): { test: string; poll: string; fault: string | null; results: BenchJsonEntry[] } {
  return { test, poll, fault, results: results.map((r) => jsonEntry(r, fault)) };
}

function jsonEntry(r: BenchResult, fault: string | null): BenchJsonEntry {
  const { setup, ...legacy } = r;
  const lat = r.test.endsWith('lat');
  const rdmaOp = !isRawType(r.type) && (r.test.startsWith('write') || r.test.startsWith('read'));
  const info: Record<string, string | number | null> = {
    test: perftestTitle(r.test, r.type).replace(/ /g, '_'),
    Dual_port: 'OFF',
    Device: isRawType(r.type) ? null : (setup?.device ?? null),
    Number_of_qps: 1,
    Transport_type: transportType(r.type),
    Connection_type: connectionType(r.type),
    Using_SRQ: 'OFF',
  };
  if (!isRawType(r.type)) info.ibv_wr_API = rdmaOp ? 'ON' : 'OFF';
  if (setup !== undefined) info.TX_depth = setup.tx_depth;
  if (setup?.cq_mod !== undefined) info.CQ_Moderation = setup.cq_mod;
  info.Mtu = isRawType(r.type) ? null : (setup?.mtu ?? null);
  info.Link_type = isRawType(r.type) ? 'UDP' : 'IB';
  if (rdmaOp && r.test.startsWith('read')) info.Outstand_reads = setup?.out_reads ?? null;
  else info.Max_inline_data = 0;
  info.rdma_cm_QPs = 'OFF';
  info.Data_ex_method = 'efa-emu daemon';
  info.type = r.type;
  if (setup !== undefined) {
    info.generation = setup.generation;
    info.poll = setup.poll;
    if (lat) info.warmup = setup.warmup;
  }
  info[lat ? 'latency_unit' : 'bw_unit'] = lat ? latencyUnit(r.test, r.type) : BW_UNIT;
  info.fault = isRawType(r.type) ? null : fault;

  // perftest's REPORT_FMT_LAT_JSON / REPORT_FMT_JSON names, in its order; ours after them.
  const res: Record<string, string | number> = { MsgSize: r.raw_size ?? r.size, n_iterations: r.iters };
  if (lat) {
    Object.assign(res, {
      t_min: r.t_min_usec ?? 0,
      t_max: r.t_max_usec ?? 0,
      t_typical: r.t_typical_usec ?? 0,
      t_avg: r.t_avg_usec ?? 0,
      t_stdev: r.t_stdev_usec ?? 0,
      percentile_99: r.t_p99_usec ?? 0,
      'percentile_99.9': r.t_p999_usec ?? 0,
    });
  } else {
    Object.assign(res, { BW_peak: r.bw_peak_mbps ?? 0, BW_average: r.bw_avg_mbps ?? 0, MsgRate: r.msg_rate_mpps ?? 0 });
  }
  res.type = r.type;
  res.test = r.test;
  for (const k of ['retransmits', 'lost', 'delivered', 'send_errors', 'ratio_to_raw'] as const) {
    const v = r[k];
    if (v !== undefined) res[k] = v;
  }
  if (r.raw_size !== undefined) Object.assign(res, { raw_size: r.raw_size, size: r.size });
  return { test_info: info, results: res, ...legacy };
}
