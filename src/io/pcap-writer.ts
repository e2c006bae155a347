/**
 * Packet capture: writes the datagrams a device sends and receives to a standard pcap file
 * that Wireshark, tshark and tcpdump open directly (see contrib/wireshark/ for a dissector of
 * the efa-emu headers inside).
 *
 * The emulator's datagrams are UDP payloads; a capture of them alone would lose who talked to
 * whom, so every record is given a synthesized frame:
 *
 * ```
 *  Ethernet (14)  dst MAC, src MAC, ethertype 0x0800 (IPv4) or 0x86dd (IPv6)
 *                 MACs are locally administered, 02:00 + the low 4 bytes of the IP address,
 *                 so each host keeps one MAC and frames stay readable by any pcap tool
 *  IPv4 (20)      version 4, IHL 5, total length, an id counting records, DF, TTL 64,
 *                 protocol 17, a valid header checksum, src/dst from the endpoints
 *    or IPv6 (40) when either endpoint is an IPv6 address (hop limit 64, next header 17)
 *  UDP (8)        ports, length; checksum 0 ("none", allowed on IPv4), computed on IPv6
 *                 where 0 is not allowed
 *  payload        the datagram as handed to or received from the socket
 * ```
 *
 * LINKTYPE_ETHERNET rather than a raw-IP link type because every pcap reader, however old,
 * decodes it.
 *
 * Cost on the hot path: a record is copied into a preallocated chunk; no syscall, no
 * allocation per packet. Full chunks (and, from an unref'd timer, partly filled ones) are
 * written with asynchronous positional writes, one at a time. Memory is bounded by
 * `bufferBytes`: when the disk falls that far behind, new records are dropped and counted in
 * {@link PcapWriter.dropped} rather than queued without end.
 */
import fs from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { performance } from 'node:perf_hooks';
import { EfaError, InvalidArgumentError } from '../common/errors';

/** pcap magic for microsecond timestamps, written in our (little-endian) byte order. */
export const PCAP_MAGIC_US = 0xa1b2c3d4;
/** pcap magic for nanosecond timestamps (accepted by {@link readPcap}). */
export const PCAP_MAGIC_NS = 0xa1b23c4d;
export const PCAP_VERSION_MAJOR = 2;
export const PCAP_VERSION_MINOR = 4;
export const LINKTYPE_ETHERNET = 1;
export const LINKTYPE_RAW = 101;
export const LINKTYPE_LINUX_SLL = 113;
export const LINKTYPE_IPV4 = 228;
export const LINKTYPE_IPV6 = 229;

const GLOBAL_HEADER_LEN = 24;
const RECORD_HEADER_LEN = 16;
const ETH_HEADER_LEN = 14;
const IPV4_HEADER_LEN = 20;
const IPV6_HEADER_LEN = 40;
const UDP_HEADER_LEN = 8;
const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;
const ETHERTYPE_VLAN = 0x8100;
const IPPROTO_UDP = 17;
const TTL = 64;
/** The largest synthesized header stack (Ethernet + IPv6 + UDP): the smallest snaplen allowed. */
const MAX_FRAME_OVERHEAD = ETH_HEADER_LEN + IPV6_HEADER_LEN + UDP_HEADER_LEN;

const DEFAULT_SNAPLEN = 65535;
const MAX_SNAPLEN = 262144;
const DEFAULT_CHUNK_BYTES = 256 * 1024;
const DEFAULT_BUFFER_BYTES = 16 * 1024 * 1024;
const DEFAULT_FLUSH_INTERVAL_MS = 200;
/** Parsed-address cache bound: endpoints are few, but a long run must not grow without end. */
const HOST_CACHE_MAX = 4096;

/** A UDP endpoint as the socket layer names it: an IP literal and a port. */
export interface PcapEndpoint {
  host: string;
  port: number;
}

/** Options of {@link PcapWriter.open}. */
export interface PcapWriterOptions {
  /**
   * Bytes kept of each frame, synthesized headers included (pcap's snaplen). Longer frames
   * are truncated; the record still states their original length. Default 65535; at least
   * 62 so the synthesized headers are never cut.
   */
  snaplen?: number;
  /**
   * Most bytes of records held in memory waiting for the disk; beyond it records are
   * dropped and counted. Default 16 MiB.
   */
  bufferBytes?: number;
  /** Size of one write to the file (records are batched up to it). Default 256 KiB. */
  chunkBytes?: number;
  /**
   * Longest time (ms) a record waits in memory before being written when traffic is too
   * thin to fill a chunk; keeps a capture followed live (`tail -f`, a FIFO) current. Default 200.
   */
  flushIntervalMs?: number;
}

/** One UDP datagram read back from a capture by {@link readPcap}. */
export interface PcapRecord {
  /** Capture time, wall clock in milliseconds since the epoch (sub-millisecond in the fraction). */
  tsMs: number;
  src: PcapEndpoint;
  dst: PcapEndpoint;
  /** The UDP payload as captured (shorter than `origLen` when the snaplen cut it). */
  payload: Buffer;
  /** Length of the UDP payload on the wire, from the UDP header. */
  origLen: number;
}

/** An endpoint address parsed once and cached: what the frame builder needs of it. */
interface ParsedHost {
  /** True when the address is IPv4 (or IPv4-mapped IPv6), so an IPv4 header can carry it. */
  v4: boolean;
  /** The IPv4 address as an unsigned 32-bit number (0 for a pure IPv6 address). */
  v4Addr: number;
  /** The address as 16 IPv6 bytes (IPv4 addresses mapped into ::ffff:0:0/96). */
  v6Bytes: Uint8Array;
}

/** A buffer of whole records on its way to the file. */
interface Chunk {
  buf: Buffer;
  /** Bytes of `buf` in use. */
  used: number;
  /** Records in `buf`, so records lost to an I/O error can be counted. */
  records: number;
  /** File offset the chunk goes to; -1 until sealed (and on files that cannot seek). */
  pos: number;
}

const enum State {
  Open,
  Closing,
  Closed,
}

// Writers with unwritten records, flushed synchronously if the process exits without closing
// them: one process listener for all, installed lazily, rather than one per writer.
const liveWriters = new Set<PcapWriter>();
let exitHookInstalled = false;
function flushAllAtExit(): void {
  for (const w of liveWriters) w['flushSyncAtExit']();
}

// Module-level timer callback given its writer: no closure per writer or per arming.
function onFlushTimer(writer: PcapWriter): void {
  writer['sealCurrent']();
  writer['pump']();
}

/**
 * Writes UDP datagrams to a pcap file without blocking the caller on the disk.
 *
 * Usage: `const cap = PcapWriter.open('run.pcap')`, then `cap.write(buf, len, src, dst)` for
 * each datagram (the bytes are copied at once, so the caller may reuse or modify `buf` right
 * after), and `await cap.close()` at the end. A process that exits without closing still gets
 * its buffered records written, from an `exit` hook.
 */
export class PcapWriter {
  /** The file written. */
  readonly path: string;
  /** Bytes kept of each frame (pcap snaplen). */
  readonly snaplen: number;

  private readonly fd: number;
  /** False for FIFOs and other files without offsets: writes then go strictly in order. */
  private readonly seekable: boolean;
  private readonly chunkBytes: number;
  private readonly maxChunks: number;
  private readonly timer: NodeJS.Timeout;

  private state = State.Open;
  private closing: Promise<void> | null = null;
  private drained: (() => void) | null = null;
  private ioError: Error | null = null;

  /** The chunk records are copied into; null when every chunk waits for the disk. */
  private current: Chunk | null;
  /** Sealed chunks in file order; the first one is being written when `writing`. */
  private readonly queue: Chunk[] = [];
  private readonly spare: Chunk[] = [];
  private chunksMade = 0;
  private writing = false;
  /** File offset the next sealed chunk goes to. */
  private filePos = GLOBAL_HEADER_LEN;

  private packetCount = 0;
  private droppedCount = 0;
  private byteCount = 0;
  private ipId = 0;

  private readonly hosts = new Map<string, ParsedHost>();
  /** Wall-clock anchor: Date.now() at open and performance.now() at the same moment. */
  private readonly wallBaseMs: number;
  private readonly perfBaseMs: number;

  private constructor(path: string, fd: number, seekable: boolean, snaplen: number, chunkBytes: number, maxChunks: number, flushIntervalMs: number) {
    this.path = path;
    this.fd = fd;
    this.seekable = seekable;
    this.snaplen = snaplen;
    this.chunkBytes = chunkBytes;
    this.maxChunks = maxChunks;
    this.wallBaseMs = Date.now();
    this.perfBaseMs = performance.now();
    this.current = this.takeChunk();
    this.timer = setInterval(onFlushTimer, flushIntervalMs, this);
    // A capture must never keep a finished program alive; the exit hook covers what is left.
    this.timer.unref();
    liveWriters.add(this);
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.on('exit', flushAllAtExit);
    }
  }

  /**
   * Creates (or truncates) `path` and writes the pcap file header. Opening is synchronous (it
   * happens once, off the hot path); a FIFO therefore blocks until its reader attaches.
   * @throws InvalidArgumentError for a bad option; EfaError with the errno code (ENOENT,
   *   EACCES, ...) when the file cannot be created.
   */
  static open(path: string, opts: PcapWriterOptions = {}): PcapWriter {
    if (typeof path !== 'string' || path.length === 0) throw new InvalidArgumentError('PcapWriter.open: "path" must be a non-empty string');
    if (opts === null || typeof opts !== 'object') throw new InvalidArgumentError('PcapWriter.open: options must be an object');
    const snaplen = intOption('snaplen', opts.snaplen, DEFAULT_SNAPLEN, MAX_FRAME_OVERHEAD, MAX_SNAPLEN);
    const bufferBytes = intOption('bufferBytes', opts.bufferBytes, DEFAULT_BUFFER_BYTES, 1024, 2 ** 31);
    const flushIntervalMs = intOption('flushIntervalMs', opts.flushIntervalMs, DEFAULT_FLUSH_INTERVAL_MS, 1, 2 ** 31 - 1);
    // A chunk must hold the largest record, or that record could never be written.
    const minChunk = RECORD_HEADER_LEN + snaplen;
    const chunkBytes = Math.max(minChunk, intOption('chunkBytes', opts.chunkBytes, DEFAULT_CHUNK_BYTES, 1024, 2 ** 30));
    // Two chunks at least: one being filled while the other is written.
    const maxChunks = Math.max(2, Math.floor(bufferBytes / chunkBytes));

    let fd: number;
    try {
      fd = fs.openSync(path, 'w');
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new EfaError(e.code ?? 'EIO', `cannot create capture file ${path}: ${e.message}`, { cause: err });
    }
    let seekable = true;
    try {
      seekable = fs.fstatSync(fd).isFile();
      const header = Buffer.alloc(GLOBAL_HEADER_LEN);
      header.writeUInt32LE(PCAP_MAGIC_US, 0);
      header.writeUInt16LE(PCAP_VERSION_MAJOR, 4);
      header.writeUInt16LE(PCAP_VERSION_MINOR, 6);
      header.writeInt32LE(0, 8); // thiszone: timestamps are UTC
      header.writeUInt32LE(0, 12); // sigfigs
      header.writeUInt32LE(snaplen, 16);
      header.writeUInt32LE(LINKTYPE_ETHERNET, 20);
      fs.writeSync(fd, header, 0, GLOBAL_HEADER_LEN, seekable ? 0 : null);
    } catch (err) {
      fs.closeSync(fd);
      const e = err as NodeJS.ErrnoException;
      throw new EfaError(e.code ?? 'EIO', `cannot write capture file ${path}: ${e.message}`, { cause: err });
    }
    return new PcapWriter(path, fd, seekable, snaplen, chunkBytes, maxChunks, flushIntervalMs);
  }

  /** Records captured: written, or buffered and still to be written. */
  get packets(): number {
    return this.packetCount;
  }

  /**
   * Records lost: dropped because `bufferBytes` of records were already waiting for the disk,
   * or lost to a write error. `packets + dropped` is the number of `write` calls made while open.
   */
  get dropped(): number {
    return this.droppedCount;
  }

  /** Bytes of records (headers included) captured so far. */
  get bytes(): number {
    return this.byteCount;
  }

  /** The first write error, after which the capture stops (later records are dropped); else null. */
  get error(): Error | null {
    return this.ioError;
  }

  /** The counters, for a device's stats snapshot. */
  toJSON(): { packets: number; dropped: number; bytes: number } {
    return { packets: this.packetCount, dropped: this.droppedCount, bytes: this.byteCount };
  }

  /**
   * Captures `len` bytes of `buf` as a UDP datagram from `src` to `dst`. The bytes are copied
   * before returning. Ignored once `close()` was called. Never throws on the hot path.
   * @param timeMs capture time as wall-clock milliseconds (fraction = sub-ms); default now,
   *   with microsecond resolution.
   */
  write(buf: Uint8Array, len: number, src: PcapEndpoint, dst: PcapEndpoint, timeMs?: number): void {
    this.writeUdp(buf, len, src.host, src.port, dst.host, dst.port, timeMs);
  }

  /**
   * {@link write} with the endpoints spelt out, for callers that hold hosts and ports
   * separately (a socket's send and receive callbacks) and would otherwise build an object
   * per packet.
   */
  writeUdp(buf: Uint8Array, len: number, srcHost: string, srcPort: number, dstHost: string, dstPort: number, timeMs?: number): void {
    if (this.state !== State.Open) return;
    if (this.ioError !== null) {
      this.droppedCount++;
      return;
    }
    if (!(len >= 0)) return;
    if (len > buf.length) len = buf.length;

    const src = this.parseHost(srcHost);
    const dst = this.parseHost(dstHost);
    const v4 = src.v4 && dst.v4;
    const ipLen = v4 ? IPV4_HEADER_LEN : IPV6_HEADER_LEN;
    const frameLen = ETH_HEADER_LEN + ipLen + UDP_HEADER_LEN + len;
    const capLen = frameLen < this.snaplen ? frameLen : this.snaplen;
    const recLen = RECORD_HEADER_LEN + capLen;

    let chunk = this.current;
    if (chunk === null || chunk.used + recLen > chunk.buf.length) {
      // A full chunk goes to the disk (sealing takes the next one); after an earlier drop
      // there is no current chunk, and a write that finished since may have freed one.
      if (chunk !== null) {
        this.sealCurrent();
        this.pump();
      } else {
        this.current = this.takeChunk();
      }
      chunk = this.current;
      if (chunk === null) {
        this.droppedCount++;
        return;
      }
    }

    const out = chunk.buf;
    let o = chunk.used;
    // Record header: seconds, microseconds, captured length, original length.
    const ms = timeMs ?? this.wallBaseMs + (performance.now() - this.perfBaseMs);
    const sec = Math.floor(ms / 1000);
    let usec = Math.round((ms - sec * 1000) * 1000);
    if (usec > 999999) usec = 999999;
    out.writeUInt32LE(sec >>> 0, o);
    out.writeUInt32LE(usec, o + 4);
    out.writeUInt32LE(capLen, o + 8);
    out.writeUInt32LE(frameLen, o + 12);
    o += RECORD_HEADER_LEN;

    // Ethernet: dst MAC, src MAC (02:00 + low 4 address bytes), ethertype.
    writeMac(out, o, dst);
    writeMac(out, o + 6, src);
    out.writeUInt16BE(v4 ? ETHERTYPE_IPV4 : ETHERTYPE_IPV6, o + 12);
    o += ETH_HEADER_LEN;

    const udpLen = UDP_HEADER_LEN + len;
    const ipTotal = IPV4_HEADER_LEN + udpLen;
    let udpSum = 0;
    if (v4) {
      const id = this.ipId;
      this.ipId = (id + 1) & 0xffff;
      // A datagram over 65535 bytes cannot exist on IPv4; clamp rather than wrap the field.
      const total = ipTotal > 0xffff ? 0xffff : ipTotal;
      out[o] = 0x45; // version 4, IHL 5 words
      out[o + 1] = 0; // DSCP/ECN
      out.writeUInt16BE(total, o + 2);
      out.writeUInt16BE(id, o + 4);
      out.writeUInt16BE(0x4000, o + 6); // DF, fragment offset 0
      out[o + 8] = TTL;
      out[o + 9] = IPPROTO_UDP;
      out.writeUInt32BE(src.v4Addr, o + 12);
      out.writeUInt32BE(dst.v4Addr, o + 16);
      out.writeUInt16BE(ipv4Checksum(total, id, src.v4Addr, dst.v4Addr), o + 10);
      o += IPV4_HEADER_LEN;
    } else {
      out.writeUInt32BE(0x60000000, o); // version 6, traffic class 0, flow label 0
      out.writeUInt16BE(udpLen > 0xffff ? 0xffff : udpLen, o + 4);
      out[o + 6] = IPPROTO_UDP;
      out[o + 7] = TTL;
      out.set(src.v6Bytes, o + 8);
      out.set(dst.v6Bytes, o + 24);
      o += IPV6_HEADER_LEN;
      // IPv6 forbids a zero UDP checksum, so pay for a real one there (IPv4 does not need it).
      udpSum = udpChecksumV6(src.v6Bytes, dst.v6Bytes, srcPort, dstPort, udpLen, buf, len);
    }
    out.writeUInt16BE(srcPort & 0xffff, o);
    out.writeUInt16BE(dstPort & 0xffff, o + 2);
    out.writeUInt16BE(udpLen > 0xffff ? 0xffff : udpLen, o + 4);
    out.writeUInt16BE(udpSum, o + 6);
    o += UDP_HEADER_LEN;

    const keep = capLen - (frameLen - len);
    if (keep > 0) {
      // Pooled MTU buffers are longer than the datagram: Buffer#copy takes the range without
      // the view object subarray() would allocate per packet.
      if (Buffer.isBuffer(buf)) buf.copy(out, o, 0, keep);
      else out.set(keep === buf.length ? buf : buf.subarray(0, keep), o);
    }
    chunk.used += recLen;
    chunk.records++;
    this.packetCount++;
    this.byteCount += recLen;
  }

  /** Resolves once every record captured so far is in the file. */
  flush(): Promise<void> {
    if (this.state === State.Closed) return Promise.resolve();
    this.sealCurrent();
    this.pump();
    return this.waitDrained();
  }

  /**
   * Writes what is buffered and closes the file. Idempotent: every call returns the same
   * promise. It resolves even after a write error (see {@link error}), since a failed
   * capture must not fail the device closing it.
   */
  close(): Promise<void> {
    if (this.closing === null) this.closing = this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    this.state = State.Closing;
    clearInterval(this.timer);
    this.sealCurrent();
    this.pump();
    await this.waitDrained();
    this.state = State.Closed;
    liveWriters.delete(this);
    await new Promise<void>((resolve) => {
      fs.close(this.fd, (err) => {
        if (err && this.ioError === null) this.ioError = err;
        resolve();
      });
    });
  }

  private waitDrained(): Promise<void> {
    if (this.queue.length === 0 && !this.writing) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const prev = this.drained;
      this.drained = () => {
        if (prev !== null) prev();
        resolve();
      };
    });
  }

  /** A chunk to copy records into: a spare one, a new one within the bound, else null. */
  private takeChunk(): Chunk | null {
    const spare = this.spare.pop();
    if (spare !== undefined) return spare;
    if (this.chunksMade >= this.maxChunks) return null;
    this.chunksMade++;
    return { buf: Buffer.allocUnsafe(this.chunkBytes), used: 0, records: 0, pos: -1 };
  }

  /** Moves the current chunk, if it holds records, to the write queue with its file offset. */
  private sealCurrent(): void {
    const c = this.current;
    if (c === null || c.used === 0) return;
    c.pos = this.filePos;
    this.filePos += c.used;
    this.queue.push(c);
    this.current = this.state === State.Open ? this.takeChunk() : null;
  }

  /** Starts writing the first queued chunk unless a write is already under way. */
  private pump(): void {
    if (this.writing) return;
    const c = this.queue[0];
    if (c === undefined) {
      const done = this.drained;
      this.drained = null;
      if (done !== null) done();
      return;
    }
    this.writing = true;
    fs.write(this.fd, c.buf, 0, c.used, this.seekable ? c.pos : null, (err, written) => this.onWritten(c, err, written));
  }

  private onWritten(c: Chunk, err: NodeJS.ErrnoException | null, written: number): void {
    this.writing = false;
    if (err === null && written < c.used) {
      // A short write (rare: a full disk, a FIFO): write the rest before anything else.
      c.buf.copy(c.buf, 0, written, c.used);
      c.used -= written;
      if (c.pos >= 0) c.pos += written;
      this.pump();
      return;
    }
    this.queue.shift();
    if (err !== null) {
      this.failed(err, c);
    } else {
      this.recycle(c);
    }
    this.pump();
  }

  /** Stops the capture after a write error: what was queued is lost and counted as dropped. */
  private failed(err: Error, c: Chunk): void {
    if (this.ioError === null) this.ioError = err;
    let lost = c.records;
    this.recycle(c);
    for (const q of this.queue.splice(0)) {
      lost += q.records;
      this.recycle(q);
    }
    if (this.current !== null) {
      lost += this.current.records;
      this.current.used = 0;
      this.current.records = 0;
    }
    this.packetCount -= lost;
    this.droppedCount += lost;
  }

  private recycle(c: Chunk): void {
    c.used = 0;
    c.records = 0;
    c.pos = -1;
    this.spare.push(c);
  }

  /** Exit hook: the event loop is gone, so write the rest synchronously. */
  private flushSyncAtExit(): void {
    if (this.state === State.Closed || this.ioError !== null) return;
    try {
      this.sealCurrent();
      // On a seekable file the chunk whose async write may be half done is rewritten at its
      // offset, which is harmless; on a FIFO it may already have gone, so it is skipped.
      const from = this.seekable || !this.writing ? 0 : 1;
      for (let i = from; i < this.queue.length; i++) {
        const c = this.queue[i];
        let off = 0;
        while (off < c.used) off += fs.writeSync(this.fd, c.buf, off, c.used - off, this.seekable ? c.pos + off : null);
      }
      this.queue.length = 0;
    } catch {
      // Nothing can be reported from an exit hook; the file keeps what was written.
    }
  }

  private parseHost(host: string): ParsedHost {
    let p = this.hosts.get(host);
    if (p === undefined) {
      if (this.hosts.size >= HOST_CACHE_MAX) this.hosts.clear();
      p = parseHostAddress(host);
      this.hosts.set(host, p);
    }
    return p;
  }
}

function intOption(name: string, v: number | undefined, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new InvalidArgumentError(`PcapWriter.open: option "${name}" must be an integer in [${min}, ${max}] (got ${String(v)})`);
  }
  return v;
}

/** MAC 02:00:a:b:c:d from the low 4 address bytes (locally administered, unicast). */
function writeMac(out: Buffer, o: number, h: ParsedHost): void {
  out[o] = 0x02;
  out[o + 1] = 0x00;
  out[o + 2] = h.v6Bytes[12];
  out[o + 3] = h.v6Bytes[13];
  out[o + 4] = h.v6Bytes[14];
  out[o + 5] = h.v6Bytes[15];
}

/**
 * The IPv4 header checksum, summed from the field values: every other 16-bit word of our
 * header is a constant, so there is no need to walk the bytes.
 */
export function ipv4Checksum(totalLen: number, id: number, src: number, dst: number): number {
  let s = 0x4500 + totalLen + id + 0x4000 + ((TTL << 8) | IPPROTO_UDP);
  s += (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** One's-complement sum of `buf[start, end)` as big-endian 16-bit words (odd tail padded). */
function onesSum(buf: Uint8Array, start: number, end: number, acc: number): number {
  let i = start;
  for (; i + 1 < end; i += 2) acc += (buf[i] << 8) | buf[i + 1];
  if (i < end) acc += buf[i] << 8;
  // Fold now and then would be needed only past ~2^37 bytes; a double holds the sum exactly.
  return acc;
}

function udpChecksumV6(src: Uint8Array, dst: Uint8Array, srcPort: number, dstPort: number, udpLen: number, payload: Uint8Array, len: number): number {
  let s = onesSum(src, 0, 16, 0);
  s = onesSum(dst, 0, 16, s);
  s += udpLen + IPPROTO_UDP; // pseudo-header: upper-layer length, next header
  s += (srcPort & 0xffff) + (dstPort & 0xffff) + udpLen; // UDP header, checksum field as 0
  s = onesSum(payload, 0, len, s);
  while (s > 0xffff) s = (s % 0x10000) + Math.floor(s / 0x10000);
  const c = ~s & 0xffff;
  // 0 means "no checksum", so a computed 0 is sent as its other one's-complement form.
  return c === 0 ? 0xffff : c;
}

/**
 * Parses an endpoint host. IP literals are what the socket layer uses; `localhost` is taken
 * as 127.0.0.1, an IPv6 zone (`%eth0`) is ignored, anything else becomes 0.0.0.0 so the
 * record is still written.
 */
function parseHostAddress(host: string): ParsedHost {
  const h = host === 'localhost' ? '127.0.0.1' : host;
  if (isIPv4(h)) return fromV4(ipv4ToNumber(h));
  const bare = h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
  const noZone = bare.includes('%') ? bare.slice(0, bare.indexOf('%')) : bare;
  if (isIPv6(noZone)) {
    const bytes = ipv6ToBytes(noZone);
    let mapped = bytes[10] === 0xff && bytes[11] === 0xff;
    for (let i = 0; i < 10 && mapped; i++) if (bytes[i] !== 0) mapped = false;
    if (mapped) return fromV4(((bytes[12] << 24) | (bytes[13] << 16) | (bytes[14] << 8) | bytes[15]) >>> 0);
    return { v4: false, v4Addr: 0, v6Bytes: bytes };
  }
  return fromV4(0);
}

function fromV4(addr: number): ParsedHost {
  const b = new Uint8Array(16);
  b[10] = 0xff;
  b[11] = 0xff;
  b[12] = addr >>> 24;
  b[13] = (addr >>> 16) & 0xff;
  b[14] = (addr >>> 8) & 0xff;
  b[15] = addr & 0xff;
  return { v4: true, v4Addr: addr, v6Bytes: b };
}

function ipv4ToNumber(s: string): number {
  const p = s.split('.');
  return ((Number(p[0]) << 24) | (Number(p[1]) << 16) | (Number(p[2]) << 8) | Number(p[3])) >>> 0;
}

/** 16 bytes of a valid IPv6 literal (as checked by isIPv6), `::` and a dotted tail included. */
function ipv6ToBytes(s: string): Uint8Array {
  const out = new Uint8Array(16);
  let text = s;
  const words: number[] = [];
  // A dotted IPv4 tail stands for the last two words.
  let tail: number[] = [];
  if (text.includes('.')) {
    const lastColon = text.lastIndexOf(':');
    const v4 = ipv4ToNumber(text.slice(lastColon + 1));
    tail = [v4 >>> 16, v4 & 0xffff];
    text = text.slice(0, lastColon + 1); // keeps a trailing "::", else drop the lone ":"
    if (!text.endsWith('::')) text = text.slice(0, -1);
  }
  const gap = text.indexOf('::');
  const parse = (part: string): number[] => (part === '' ? [] : part.split(':').map((w) => parseInt(w, 16)));
  if (gap === -1) {
    words.push(...parse(text), ...tail);
  } else {
    const head = parse(text.slice(0, gap));
    const rest = [...parse(text.slice(gap + 2)), ...tail];
    words.push(...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest);
  }
  for (let i = 0; i < 8; i++) {
    out[2 * i] = (words[i] ?? 0) >> 8;
    out[2 * i + 1] = (words[i] ?? 0) & 0xff;
  }
  return out;
}

function ipv6ToString(b: Uint8Array, o: number): string {
  let mapped = b[o + 10] === 0xff && b[o + 11] === 0xff;
  for (let i = 0; i < 10 && mapped; i++) if (b[o + i] !== 0) mapped = false;
  if (mapped) return `::ffff:${b[o + 12]}.${b[o + 13]}.${b[o + 14]}.${b[o + 15]}`;
  const w: string[] = [];
  for (let i = 0; i < 8; i++) w.push(((b[o + 2 * i] << 8) | b[o + 2 * i + 1]).toString(16));
  // Compress the longest run of zero words (two or more), as RFC 5952 asks.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (w[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best === -1) return w.join(':');
  return `${w.slice(0, best).join(':')}::${w.slice(best + bestLen).join(':')}`;
}

/**
 * Reads the UDP datagrams of a pcap file: the writer's own captures, and tcpdump's of an
 * Ethernet, raw-IP or Linux "any" interface. Frames that are not UDP over IPv4/IPv6 (ARP,
 * TCP, IP fragments after the first) are skipped; a record cut short at the end of the file
 * (a capture still being written) ends the list.
 * @throws EfaError EINVAL when the file is not a pcap file or its link type is not supported;
 *   the fs error when it cannot be read.
 */
export function readPcap(path: string): PcapRecord[] {
  const file = fs.readFileSync(path);
  if (file.length < GLOBAL_HEADER_LEN) throw new EfaError('EINVAL', `${path}: not a pcap file (too short)`);
  const magicLE = file.readUInt32LE(0);
  let le: boolean;
  let nanos: boolean;
  if (magicLE === PCAP_MAGIC_US || magicLE === PCAP_MAGIC_NS) {
    le = true;
    nanos = magicLE === PCAP_MAGIC_NS;
  } else {
    const magicBE = file.readUInt32BE(0);
    if (magicBE !== PCAP_MAGIC_US && magicBE !== PCAP_MAGIC_NS) {
      throw new EfaError('EINVAL', `${path}: not a pcap file (magic 0x${magicLE.toString(16)}; pcapng is not supported)`);
    }
    le = false;
    nanos = magicBE === PCAP_MAGIC_NS;
  }
  const u32 = (o: number): number => (le ? file.readUInt32LE(o) : file.readUInt32BE(o));
  // The link type's upper bits may carry FCS flags (pcap "LINKTYPE_" field layout).
  const linkType = u32(20) & 0x0fffffff;
  if (![LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6].includes(linkType)) {
    throw new EfaError('EINVAL', `${path}: link type ${linkType} is not supported`);
  }
  const out: PcapRecord[] = [];
  let o = GLOBAL_HEADER_LEN;
  while (o + RECORD_HEADER_LEN <= file.length) {
    const sec = u32(o);
    const frac = u32(o + 4);
    const capLen = u32(o + 8);
    const start = o + RECORD_HEADER_LEN;
    if (start + capLen > file.length) break;
    o = start + capLen;
    const frame = file.subarray(start, start + capLen);
    const rec = parseFrame(frame, linkType);
    if (rec === null) continue;
    rec.tsMs = sec * 1000 + (nanos ? frac / 1e6 : frac / 1e3);
    out.push(rec);
  }
  return out;
}

/** The UDP datagram in one link-layer frame, or null when it holds none. */
function parseFrame(f: Buffer, linkType: number): PcapRecord | null {
  let o = 0;
  let ethertype = -1;
  if (linkType === LINKTYPE_ETHERNET) {
    if (f.length < ETH_HEADER_LEN) return null;
    ethertype = f.readUInt16BE(12);
    o = ETH_HEADER_LEN;
    if (ethertype === ETHERTYPE_VLAN) {
      if (f.length < o + 4) return null;
      ethertype = f.readUInt16BE(16);
      o += 4;
    }
  } else if (linkType === LINKTYPE_LINUX_SLL) {
    if (f.length < 16) return null;
    ethertype = f.readUInt16BE(14);
    o = 16;
  } else if (linkType === LINKTYPE_IPV4) {
    ethertype = ETHERTYPE_IPV4;
  } else if (linkType === LINKTYPE_IPV6) {
    ethertype = ETHERTYPE_IPV6;
  } else if (f.length > 0) {
    ethertype = f[0] >> 4 === 4 ? ETHERTYPE_IPV4 : f[0] >> 4 === 6 ? ETHERTYPE_IPV6 : -1;
  }
  let srcHost: string;
  let dstHost: string;
  if (ethertype === ETHERTYPE_IPV4) {
    if (f.length < o + IPV4_HEADER_LEN || f[o] >> 4 !== 4) return null;
    const ihl = (f[o] & 0x0f) * 4;
    if (f[o + 9] !== IPPROTO_UDP || (f.readUInt16BE(o + 6) & 0x1fff) !== 0 || ihl < IPV4_HEADER_LEN) return null;
    srcHost = `${f[o + 12]}.${f[o + 13]}.${f[o + 14]}.${f[o + 15]}`;
    dstHost = `${f[o + 16]}.${f[o + 17]}.${f[o + 18]}.${f[o + 19]}`;
    o += ihl;
  } else if (ethertype === ETHERTYPE_IPV6) {
    // Extension headers are not followed: the emulator's own traffic never has them.
    if (f.length < o + IPV6_HEADER_LEN || f[o] >> 4 !== 6 || f[o + 6] !== IPPROTO_UDP) return null;
    srcHost = ipv6ToString(f, o + 8);
    dstHost = ipv6ToString(f, o + 24);
    o += IPV6_HEADER_LEN;
  } else {
    return null;
  }
  if (f.length < o + UDP_HEADER_LEN) return null;
  const udpLen = f.readUInt16BE(o + 4);
  const origLen = Math.max(0, udpLen - UDP_HEADER_LEN);
  const payloadStart = o + UDP_HEADER_LEN;
  return {
    tsMs: 0,
    src: { host: srcHost, port: f.readUInt16BE(o) },
    dst: { host: dstHost, port: f.readUInt16BE(o + 2) },
    payload: f.subarray(payloadStart, Math.min(f.length, payloadStart + origLen)),
    origLen,
  };
}
