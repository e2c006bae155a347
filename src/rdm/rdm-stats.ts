import type { RdmProtocol } from './rdm-wire';
import { RdmPktType, rdmPktTypeName } from './rdm-wire';

const PROTOCOLS: readonly RdmProtocol[] = ['eager', 'medium', 'longcts', 'longread'];

/**
 * The endpoint's counters: messages and bytes by the protocol they took (what users cannot see
 * on real EFA), packets sent by type, and the RNR, handshake, probe and drop events. Plain
 * numeric fields, so counting costs nothing on the hot path.
 */
export class RdmStats {
  private readonly tx: Record<RdmProtocol, [number, number]> = { eager: [0, 0], medium: [0, 0], longcts: [0, 0], longread: [0, 0] };
  private readonly rx: Record<RdmProtocol, [number, number]> = { eager: [0, 0], medium: [0, 0], longcts: [0, 0], longread: [0, 0] };
  /** Packets sent, by type (a type is one byte). */
  private readonly pkts = new Float64Array(256);
  private readonly events = new Map<string, number>();

  countTx(proto: RdmProtocol, bytes: number): void {
    const c = this.tx[proto];
    c[0]++;
    c[1] += bytes;
  }

  /** A long-read send that could not register its buffer went long-CTS instead. */
  countTxFallback(bytes: number): void {
    this.tx.longread[0]--;
    this.tx.longread[1] -= bytes;
    this.countTx('longcts', bytes);
    this.inc('longread_fallbacks');
  }

  countRx(proto: RdmProtocol, bytes: number): void {
    const c = this.rx[proto];
    c[0]++;
    c[1] += bytes;
  }

  countPacket(type: number): void {
    this.pkts[type & 0xff]++;
  }

  inc(name: string): void {
    this.events.set(name, (this.events.get(name) ?? 0) + 1);
  }

  /** Messages sent by protocol (for tests and tools). */
  txMessages(proto: RdmProtocol): number {
    return this.tx[proto][0];
  }

  rxMessages(proto: RdmProtocol): number {
    return this.rx[proto][0];
  }

  /** Flat counters: `<proto>_tx_msgs`, `<proto>_tx_bytes`, `<proto>_rx_*`, `pkts_<TYPE>`, events. */
  snapshot(extra: Record<string, number> = {}): Record<string, number> {
    const out: Record<string, number> = {};
    for (const p of PROTOCOLS) {
      out[`${p}_tx_msgs`] = this.tx[p][0];
      out[`${p}_tx_bytes`] = this.tx[p][1];
      out[`${p}_rx_msgs`] = this.rx[p][0];
      out[`${p}_rx_bytes`] = this.rx[p][1];
    }
    for (const t of Object.values(RdmPktType)) out[`pkts_${rdmPktTypeName(t)}`] = this.pkts[t];
    for (const [k, v] of this.events) out[k] = v;
    return { ...out, ...extra };
  }

  /** One event counter (0 when it never happened). */
  get(name: string): number {
    return this.events.get(name) ?? 0;
  }
}
