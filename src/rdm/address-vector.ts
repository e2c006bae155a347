import { InvalidArgumentError } from '../common/errors';
import type { AddressHandle } from '../device/address-handle';
import { decodeRawAddress, encodeRawAddress, type RawAddress } from './raw-address';
import { FI_ADDR_NOTAVAIL, RdmPeer } from './rdm-peer';

/**
 * The address vector (`fid_av`, FI_AV_TABLE): raw addresses the application inserts, each
 * given the next `fi_addr`, plus the peers the endpoint learnt from their packets before (or
 * without) the application inserting them, which it reports as FI_ADDR_NOTAVAIL.
 *
 * Peers are found by the AH number and QPN a device completion names (one integer key, no
 * allocation per packet) or, before their AH exists, by GID text and QPN.
 */
export class AddressVector {
  private readonly table: Array<RdmPeer | null> = [];
  private readonly byAhQp = new Map<number, RdmPeer>();
  private readonly byText = new Map<string, RdmPeer>();

  constructor(private readonly createAh: (gid: Uint8Array) => Promise<AddressHandle>) {}

  /**
   * Inserts a raw address (`fi_av_insert`) and returns its fi_addr. The same address twice
   * gives the same fi_addr; a peer already learnt from its packets gets one now.
   */
  async insert(raw: Uint8Array): Promise<number> {
    const addr = decodeRawAddress(raw);
    const peer = await this.peerFor(addr);
    if (peer.fiAddr === FI_ADDR_NOTAVAIL) {
      peer.fiAddr = this.table.length;
      this.table.push(peer);
    }
    return peer.fiAddr;
  }

  /** Removes an fi_addr (`fi_av_remove`); the peer's state stays for packets in flight. */
  remove(fiAddr: number): void {
    const peer = this.get(fiAddr);
    this.table[fiAddr] = null;
    peer.fiAddr = FI_ADDR_NOTAVAIL;
  }

  /** The raw address at an fi_addr (`fi_av_lookup`). */
  lookup(fiAddr: number): Uint8Array {
    return Uint8Array.from(this.get(fiAddr).raw);
  }

  /** The peer at an fi_addr; EINVAL when the slot is empty. */
  get(fiAddr: number): RdmPeer {
    const peer = Number.isInteger(fiAddr) && fiAddr >= 0 ? this.table[fiAddr] : undefined;
    if (peer === undefined || peer === null) throw new InvalidArgumentError(`fi_addr ${fiAddr} is not in the address vector`);
    return peer;
  }

  /** Entries inserted (including removed slots, as fi_addr values are never reused). */
  get size(): number {
    return this.table.length;
  }

  /** The peer a device completion names, if known. */
  byAh(ahNum: number, qpn: number): RdmPeer | undefined {
    return this.byAhQp.get(ahNum * 0x10000 + qpn);
  }

  /** The peer at a GID (text) and QPN, if known. */
  byAddress(gidText: string, qpn: number): RdmPeer | undefined {
    return this.byText.get(`${gidText}/${qpn}`);
  }

  /**
   * The peer for an address, created (with its AH) when new. A known GID and QPN with another
   * connection id is a new endpoint that reused the QPN: the old one is returned in `replaced`.
   */
  async peerFor(addr: RawAddress, onReplace?: (old: RdmPeer) => void): Promise<RdmPeer> {
    const text = `${addr.gidText}/${addr.qpn}`;
    const known = this.byText.get(text);
    if (known !== undefined && known.addr.connid === addr.connid) {
      if (known.ah === null && known.ahError === null) await this.ahReady(known);
      if (known.ahError !== null) throw known.ahError;
      return known;
    }
    if (known !== undefined) {
      this.forget(known);
      onReplace?.(known);
    }
    const peer = new RdmPeer(addr, encodeRawAddress(addr.gid, addr.qpn, addr.connid));
    this.byText.set(text, peer);
    await this.ahReady(peer);
    if (peer.ahError !== null) throw peer.ahError;
    return peer;
  }

  /** Every peer this endpoint knows. */
  peers(): RdmPeer[] {
    return [...this.byText.values()];
  }

  private readonly pendingAh = new Map<RdmPeer, Promise<void>>();
  private readonly gidByAh = new Map<number, Uint8Array>();

  /** The GID an AH number stands for, when some peer of this endpoint has that AH. */
  gidOfAh(ahNum: number): Uint8Array | undefined {
    return this.gidByAh.get(ahNum);
  }

  private ahReady(peer: RdmPeer): Promise<void> {
    let p = this.pendingAh.get(peer);
    if (p === undefined) {
      p = this.createAh(peer.addr.gid).then(
        (ah) => {
          peer.ah = ah;
          this.gidByAh.set(ah.ahNum, peer.addr.gid);
          this.byAhQp.set(ah.ahNum * 0x10000 + peer.addr.qpn, peer);
        },
        (err: Error) => {
          peer.ahError = err;
        },
      );
      this.pendingAh.set(peer, p);
    }
    return p;
  }

  private forget(peer: RdmPeer): void {
    this.byText.delete(`${peer.addr.gidText}/${peer.addr.qpn}`);
    if (peer.ah !== null) this.byAhQp.delete(peer.ah.ahNum * 0x10000 + peer.addr.qpn);
    if (peer.fiAddr !== FI_ADDR_NOTAVAIL) this.table[peer.fiAddr] = null;
    peer.fiAddr = FI_ADDR_NOTAVAIL;
  }
}
