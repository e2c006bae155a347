import fs from 'node:fs';
import { EfaError } from '../common/errors';
import { PCAP_MAGIC_NS, PCAP_MAGIC_US } from './pcap-writer';

/*
 * Merges pcap files into one in time order without holding them in memory: each input is read
 * in chunks, records are copied as they are (no frame is parsed), and a heap picks the next
 * record across inputs. As mergecap does, each input is taken to be in capture order already
 * (a device's capture is); the merge interleaves them by time, keeping inputs' order on ties.
 */

const GLOBAL_HEADER_LEN = 24;
const RECORD_HEADER_LEN = 16;
/** Read size per input: a few dozen inputs cost a few dozen of these. */
const READ_CHUNK = 1 << 20;
/** Output is written in chunks of this size. */
const WRITE_CHUNK = 1 << 20;

/** One input, read forward a chunk at a time; `next()` exposes one whole record. */
class PartReader {
  readonly header = Buffer.alloc(GLOBAL_HEADER_LEN);
  private buf = Buffer.allocUnsafe(READ_CHUNK);
  /** Valid bytes of `buf` are [start, end). */
  private start = 0;
  private end = 0;
  private eof = false;
  private readonly fd: number;
  readonly le: boolean;
  /** The current record: offset in `buf`, whole length (header included), timestamp. */
  recOff = 0;
  recLen = 0;
  sec = 0;
  frac = 0;

  constructor(
    readonly path: string,
    readonly index: number,
  ) {
    this.fd = fs.openSync(path, 'r');
    try {
      const n = fs.readSync(this.fd, this.header, 0, GLOBAL_HEADER_LEN, null);
      if (n < GLOBAL_HEADER_LEN) throw new EfaError('EINVAL', `${path}: not a pcap file (too short)`);
      const magic = this.header.readUInt32LE(0);
      if (magic === PCAP_MAGIC_US || magic === PCAP_MAGIC_NS) this.le = true;
      else if (this.header.readUInt32BE(0) === PCAP_MAGIC_US || this.header.readUInt32BE(0) === PCAP_MAGIC_NS) this.le = false;
      else throw new EfaError('EINVAL', `${path}: not a pcap file (magic 0x${magic.toString(16)})`);
    } catch (err) {
      fs.closeSync(this.fd);
      throw err;
    }
  }

  /** Advances to the next whole record; false at the end (a record cut short ends the input). */
  next(): boolean {
    this.start += this.recLen;
    this.recLen = 0;
    if (!this.fill(RECORD_HEADER_LEN)) return false;
    const capLen = this.u32(this.start + 8);
    if (!this.fill(RECORD_HEADER_LEN + capLen)) return false;
    this.recOff = this.start;
    this.recLen = RECORD_HEADER_LEN + capLen;
    this.sec = this.u32(this.start);
    this.frac = this.u32(this.start + 4);
    return true;
  }

  /** The current record's bytes (valid until the next `next()`). */
  record(): Buffer {
    return this.buf.subarray(this.recOff, this.recOff + this.recLen);
  }

  close(): void {
    fs.closeSync(this.fd);
  }

  private u32(o: number): number {
    return this.le ? this.buf.readUInt32LE(o) : this.buf.readUInt32BE(o);
  }

  /** Makes `need` bytes available from `start`, reading (and growing for a huge record) as needed. */
  private fill(need: number): boolean {
    while (this.end - this.start < need) {
      if (this.eof) return false;
      if (this.start > 0) {
        this.buf.copy(this.buf, 0, this.start, this.end);
        this.end -= this.start;
        this.start = 0;
      }
      if (need > this.buf.length) {
        const bigger = Buffer.allocUnsafe(Math.max(need, this.buf.length * 2));
        this.buf.copy(bigger, 0, 0, this.end);
        this.buf = bigger;
      }
      const n = fs.readSync(this.fd, this.buf, this.end, this.buf.length - this.end, null);
      if (n === 0) this.eof = true;
      this.end += n;
    }
    return true;
  }
}

/** True when a's current record goes before b's: earlier, or as early and from an earlier input. */
function before(a: PartReader, b: PartReader): boolean {
  if (a.sec !== b.sec) return a.sec < b.sec;
  if (a.frac !== b.frac) return a.frac < b.frac;
  return a.index < b.index;
}

/** A binary min-heap of readers by their current record. */
class ReaderHeap {
  readonly items: PartReader[] = [];

  push(r: PartReader): void {
    const h = this.items;
    h.push(r);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }

  /** Restores order after the top reader moved on to its next record, or removes it when it ended. */
  fixTop(ended: boolean): void {
    const h = this.items;
    if (ended) {
      const last = h.pop() as PartReader;
      if (h.length === 0) return;
      h[0] = last;
    }
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && before(h[l], h[m])) m = l;
      if (r < h.length && before(h[r], h[m])) m = r;
      if (m === i) return;
      [h[i], h[m]] = [h[m], h[i]];
      i = m;
    }
  }
}

/**
 * Merges the pcap files `inputs` into `target` in time order, streaming; returns how many
 * records it wrote. The inputs must share one format (byte order, timestamp precision, link
 * type), as the parts one capture's ranks wrote do. The merge goes to a temporary file renamed
 * onto `target` at the end, so a failure leaves no half-written target and the inputs intact.
 * @throws EfaError EINVAL for an input that is not pcap or differs in format; fs errors as thrown.
 */
export function mergePcapFiles(inputs: readonly string[], target: string): number {
  const readers: PartReader[] = [];
  const tmp = `${target}.merging-${process.pid}`;
  let out = -1;
  try {
    for (const p of inputs) readers.push(new PartReader(p, readers.length));
    if (readers.length === 0) throw new EfaError('EINVAL', `no pcap files to merge into ${target}`);
    const first = readers[0];
    for (const r of readers) {
      // Magic (order, precision), snaplen aside, and link type must agree: records are copied as they are.
      if (r.header.readUInt32LE(0) !== first.header.readUInt32LE(0) || r.header.readUInt32LE(20) !== first.header.readUInt32LE(20)) {
        throw new EfaError('EINVAL', `${r.path}: its pcap format differs from ${first.path}'s; cannot merge them record for record`);
      }
    }
    const header = Buffer.from(first.header);
    // The merged snaplen is the largest of the inputs', so no record exceeds it.
    let snap = 0;
    for (const r of readers) snap = Math.max(snap, first.le ? r.header.readUInt32LE(16) : r.header.readUInt32BE(16));
    if (first.le) header.writeUInt32LE(snap, 16);
    else header.writeUInt32BE(snap, 16);

    out = fs.openSync(tmp, 'w');
    fs.writeSync(out, header);
    const heap = new ReaderHeap();
    for (const r of readers) if (r.next()) heap.push(r);
    const wbuf = Buffer.allocUnsafe(WRITE_CHUNK);
    let used = 0;
    let count = 0;
    while (heap.items.length > 0) {
      const top = heap.items[0];
      const rec = top.record();
      if (used + rec.length > wbuf.length) {
        fs.writeSync(out, wbuf, 0, used);
        used = 0;
      }
      if (rec.length > wbuf.length) fs.writeSync(out, rec);
      else {
        rec.copy(wbuf, used);
        used += rec.length;
      }
      count++;
      heap.fixTop(!top.next());
    }
    if (used > 0) fs.writeSync(out, wbuf, 0, used);
    fs.closeSync(out);
    out = -1;
    fs.renameSync(tmp, target);
    return count;
  } catch (err) {
    if (out >= 0) fs.closeSync(out);
    fs.rmSync(tmp, { force: true });
    throw err;
  } finally {
    for (const r of readers) r.close();
  }
}
