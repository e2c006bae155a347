import { hostname } from 'node:os';
import { rootLogger, type Logger } from './common/logger';
import { parseGid } from './common/gid';
import { DaemonClient } from './control/client';
import type { DeviceAttributes } from './device/attributes';
import { Device } from './device/device';
import { checkPaths, DEFAULT_DEVICE_HOST, ENV_COALESCE, ENV_GENERATION, ENV_SRD, parseCcMode, parseDeviceHost, readCcEnv, readDeviceHost, readPathsEnv, readRankEnv, parseHostPort, type HostPort } from './env';
import { DEFAULT_GENERATION, generationProfile } from './device/generations';
import { UdpPort } from './io/udp-port';
import { TimerDriver } from './io/timer-driver';
import { FaultInjector, defaultTargetKey } from './io/fault-injector';
import { linkRoundTripMs, toFaultSpec, type FaultSpec } from './io/fault-spec';
import { gidDeviceIndex } from './common/gid';
import { nextIncarnation } from './common/incarnation';
import { PcapWriter } from './io/pcap-writer';
import { checkCoalesceBytes, DatagramCoalescer, DEFAULT_MAX_DATAGRAM, parseCoalesceBytes } from './io/datagram-coalescer';
import { parseSrdConfigText, resolveSrdConfig, type CcMode, type SrdConfig } from './srd/srd-config';

/** Options of {@link openDevice}; each falls back to the launcher's environment variables. */
export interface OpenDeviceOptions {
  /** Device name, stable across runs (the daemon keeps its GID). Default: `EFA_EMU_DEVICE_NAME`, else `efa<rank>`, else `efa-<host>-<pid>`. */
  name?: string;
  /** Control daemon, "host:port" or an object. Default: `EFA_EMU_DAEMON`, else 127.0.0.1:18515. */
  daemon?: string | HostPort;
  /** The daemon's shared token, sent in a `hello` on connecting. Default: `EFA_EMU_TOKEN`; null sends none. */
  daemonToken?: string | null;
  /**
   * IP address the device's UDP socket binds, announced to the daemon as the endpoint peers
   * send to: across hosts, this host's address on their network. Not a wildcard (0.0.0.0,
   * ::) nor a name, which peers could not use (`EINVAL`). Default: `EFA_EMU_HOST`, else
   * 127.0.0.1.
   */
  host?: string;
  /** UDP port (0, the default, lets the OS pick). */
  port?: number;
  /** This process's rank, reported to the daemon. Default: from the launcher's variables. */
  rank?: number | null;
  /**
   * The EFA generation to emulate: `efa0` (the 2018 device: send/receive only) .. `efa3`, or
   * the PCI id (`0xefa1`). Default: `EFA_EMU_GENERATION`, else the newest.
   */
  generation?: string;
  /** Overrides of the device attributes (limits, MTU). */
  attributes?: Partial<DeviceAttributes>;
  /** SRD tunables (window, RTO bounds, `unresponsiveTimeoutMs`, ...). Default: `EFA_EMU_SRD`. */
  srd?: Partial<SrdConfig>;
  /**
   * Network paths the SRD engine sprays each peer's packets over (1..64); wins over
   * `srd.paths`. Default: `srd.paths`, else `EFA_EMU_PATHS`, else `EFA_EMU_SRD`'s, else 4.
   */
  paths?: number;
  /**
   * SRD congestion control: `delay` (RTT-driven window; `on` is accepted for it) or `off`;
   * wins over `srd.cc`. Default: `srd.cc`, else `EFA_EMU_CC`, else `EFA_EMU_SRD`'s, else `delay`.
   */
  cc?: CcMode | 'on';
  /**
   * Faults on everything this device sends: a spec string such as
   * `loss=2%,dup=1%,reorder=10%,delay=200us,seed=7`, or a parsed spec. Default: `EFA_EMU_FAULTS`.
   * Each device mixes its device index into the seed, so ranks do not drop in lockstep.
   * `bottleneck=` (and `bottleneck-buffer=`) act on what it receives: every packet waits in
   * one FIFO drained at that rate, and is dropped when the FIFO is full.
   */
  faults?: string | FaultSpec | null;
  /**
   * Write every datagram this device sends (after fault injection: lost ones are absent,
   * duplicates appear twice, corrupted ones with the flipped bit) and receives (after the
   * receive-side bottleneck: what it dropped is absent) to this pcap file. `{rank}`, `{name}` and `{pid}` are replaced. Default: `EFA_EMU_CAPTURE`.
   */
  capture?: string | null;
  /**
   * Doorbell batching: packets sent in one synchronous run to one destination leave packed in
   * datagrams of at most this many bytes (a lone packet leaves as it is, in the same turn);
   * 0 sends every packet in its own datagram. Faults and the capture still see each packet.
   * Default: `EFA_EMU_COALESCE`, else 65000.
   */
  coalesce?: number;
  logger?: Logger;
}

/**
 * An emulated EFA device opened by this process: the verbs context plus the control-plane
 * connection that leased its GID. `daemon` offers the out-of-band exchange (put/get/barrier)
 * that ranks use to swap GIDs and QP numbers, as a PMI does.
 */
export class EfaDevice extends Device {
  /** The control-plane client of this device. */
  daemon!: DaemonClient;
  /** The world size, when a launcher set it. */
  worldSize: number | null = null;
  /** The UDP endpoint other devices send to. */
  endpoint!: HostPort;
  /** The fault injector in front of the socket; with no faults set it passes everything through. */
  faults!: FaultInjector;
}

/**
 * Opens an emulated EFA device, as `ibv_open_device`: connects to the control daemon, binds a
 * UDP socket, registers the device name to lease its GID, and returns the verbs context.
 * Close it with `close()` (idempotent) so the daemon sees a clean leave.
 */
export async function openDevice(opts: OpenDeviceOptions = {}): Promise<EfaDevice> {
  const env = readRankEnv();
  const rank = opts.rank !== undefined ? opts.rank : env.rank;
  const name = opts.name ?? env.deviceName ?? (rank !== null ? `efa${rank}` : `efa-${hostname()}-${process.pid}`);
  const daemonAddr = opts.daemon === undefined ? env.daemon : typeof opts.daemon === 'string' ? parseHostPort(opts.daemon, 'daemon') : opts.daemon;
  const logger = (opts.logger ?? rootLogger()).child({ component: 'device' });
  const faultSource = opts.faults !== undefined ? 'faults' : 'EFA_EMU_FAULTS';
  // Checked before anything is opened: a bad spec is the caller's error, named as such.
  const faultSpec = toFaultSpec(opts.faults !== undefined ? opts.faults : env.faults, faultSource);
  const generation = opts.generation ?? env.generation ?? DEFAULT_GENERATION;
  generationProfile(generation, opts.generation !== undefined ? 'generation' : ENV_GENERATION);
  const srd = srdOptions(opts, env.srd);
  // Checked before anything is opened: the address is announced to peers, so one they could
  // not send to is refused here rather than showing up later as a silent peer.
  const coalesceText = process.env[ENV_COALESCE];
  const coalesceBytes =
    opts.coalesce !== undefined ? checkCoalesceBytes(opts.coalesce, 'coalesce') : coalesceText === undefined || coalesceText.trim() === '' ? DEFAULT_MAX_DATAGRAM : parseCoalesceBytes(coalesceText, ENV_COALESCE);
  const bindHost = opts.host !== undefined ? parseDeviceHost(opts.host, 'host') : (readDeviceHost() ?? DEFAULT_DEVICE_HOST);

  const client = await DaemonClient.connect({ host: daemonAddr.host, port: daemonAddr.port, logger, token: opts.daemonToken });
  let port: UdpPort | null = null;
  let capture: PcapWriter | null = null;
  try {
    port = await UdpPort.open({ host: bindHost, port: opts.port, logger });
    const capturePath = opts.capture !== undefined ? opts.capture : (process.env.EFA_EMU_CAPTURE ?? null);
    if (capturePath !== null && capturePath !== '') {
      capture = PcapWriter.open(expandCapturePath(capturePath, name, rank));
    }
    const endpoint = { host: port.host, port: port.port };
    const incarnation = nextIncarnation();
    const lease = await client.register({ name, endpoint, rank, incarnation });
    const udp = port;
    let device: EfaDevice | null = null;
    const cap = capture;
    // With coalescing off it still splits the bundles peers send, and counts datagrams.
    const coalescer = new DatagramCoalescer((buf, len, host, p, onSent) => udp.send(buf, len, host, p, onSent), coalesceBytes);
    const toWire = (buf: Buffer, len: number, host: string, p: number, onSent?: (() => void) | null): void => coalescer.send(buf, len, host, p, onSent);
    // Captured per packet after the faults (what really left), before packets share datagrams.
    const toSocket =
      cap === null
        ? toWire
        : (buf: Buffer, len: number, host: string, p: number, onSent?: (() => void) | null): void => {
            cap.writeUdp(buf, len, udp.host, udp.port, host, p);
            toWire(buf, len, host, p, onSent);
          };
    // Always there, so faults can be set at run time (`device.faults.setSpec(...)`); with no
    // faults it passes every packet straight through.
    const injector = new FaultInjector({
      spec: { ...faultSpec, seed: (Math.imul(faultSpec.seed, 0x9e3779b1) + gidDeviceIndex(parseGid(lease.gid))) >>> 0 },
      send: toSocket,
      source: faultSource,
      self: name,
      // Partitions may name a device ("efa1") as well as an endpoint ("127.0.0.1:4000").
      targetKey: (host, p) => device?.peerNameAt(host, p) ?? defaultTargetKey(host, p),
    });
    const send = (buf: Buffer, len: number, host: string, p: number, onSent?: (() => void) | null): void => injector.send(buf, len, host, p, onSent);
    const timer = new TimerDriver(performance.now.bind(performance), () => device?.onTimer());
    device = new EfaDevice({
      name,
      gid: parseGid(lease.gid),
      rank,
      incarnation,
      generation,
      attributes: opts.attributes,
      srd,
      timer,
      logger,
      transport: {
        sendPacket: send,
        stats: () => transportCounters(udp, injector, cap, coalescer),
      },
      resolver: (gid) => client.resolve(gid),
      onClose: async () => {
        timer.close();
        injector.close();
        coalescer.close();
        await udp.close();
        await cap?.close();
        // The stats provider stays until the client has left: its unregister carries the
        // device's final counters (its last words).
        await client.close();
        client.setStatsProvider(null);
      },
    });
    device.daemon = client;
    device.worldSize = env.size;
    device.faults = injector;
    const engine = device.srd;
    injector.onSpec = (spec) => engine.setLinkDelay(linkRoundTripMs(spec));
    injector.onSpec(injector.plan.spec);
    device.endpoint = endpoint;
    const dev = device;
    // Captured before the device decodes it: verifying the CRC zeroes its field in place.
    const deliver =
      cap === null
        ? (buf: Buffer, host: string, p: number): void => dev.handleDatagram(buf, host, p)
        : (buf: Buffer, host: string, p: number): void => {
            cap.writeUdp(buf, buf.length, host, p, udp.host, udp.port);
            dev.handleDatagram(buf, host, p);
          };
    // The bottleneck sits between the split and the capture: the capture shows what got through.
    const ingress = (buf: Buffer, host: string, p: number): void => injector.receive(buf, host, p, deliver);
    udp.onDatagram((buf, host, p) => coalescer.receive(buf, host, p, ingress));
    client.on('peer_down', (ev: { gid: string }) => dev.notifyPeerDown(ev.gid));
    client.on('peer_up', (ev) => dev.notifyPeerUp(ev.gid, ev.endpoint, ev.incarnation, ev.name));
    client.setStatsProvider(() => dev.statsSnapshot());
    // The devices already registered: their packets are then accepted from the first one,
    // without a lookup (later ones arrive as peer_up events).
    try {
      for (const d of (await client.list()).devices) {
        if (d.up && d.gid !== lease.gid) dev.learnEndpoint(d.gid, d.endpoint, d.incarnation, d.name);
      }
    } catch (err) {
      device.logger.debug({ err }, 'device list not read; peers are confirmed as they are first heard');
    }
    device.logger.info({ endpoint, daemon: daemonAddr }, 'device opened');
    return device;
  } catch (err) {
    await port?.close();
    await capture?.close();
    await client.close();
    throw err;
  }
}

/**
 * The SRD configuration a device gets: `srd` (else `EFA_EMU_SRD`), with `paths` / `cc` on
 * top; where neither the option nor `srd` sets one, `EFA_EMU_PATHS` / `EFA_EMU_CC` do (an
 * option beats the environment, as `srd` beats `EFA_EMU_SRD`). Checked here, before
 * anything is opened, so the error names the option or variable.
 */
function srdOptions(opts: OpenDeviceOptions, envSrd: string | null): Partial<SrdConfig> | undefined {
  const base: Partial<SrdConfig> | undefined = opts.srd ?? (envSrd === null ? undefined : resolveSrdConfig(parseSrdConfigText(envSrd, ENV_SRD)));
  const paths = opts.paths !== undefined ? checkPaths(opts.paths, 'paths') : opts.srd?.paths !== undefined ? null : readPathsEnv();
  const cc = opts.cc !== undefined ? parseCcMode(opts.cc, 'cc') : opts.srd?.cc !== undefined ? null : readCcEnv();
  if (paths === null && cc === null) return base;
  const out: Partial<SrdConfig> = { ...base };
  if (paths !== null) out.paths = paths;
  if (cc !== null) out.cc = cc;
  return out;
}

/** Socket errors, the injector's drops and changes and the capture's counts, under the device counters' names. */
function transportCounters(udp: UdpPort, inj: FaultInjector, cap: PcapWriter | null, co: DatagramCoalescer): Record<string, number> {
  const s = inj.stats;
  const out: Record<string, number> = {
    tx_errors: udp.sendErrors,
    tx_drop_injected: s.injected_loss + s.partition_drops + s.rate_drops,
    tx_injected_loss: s.injected_loss,
    tx_injected_partition_drops: s.partition_drops,
    tx_injected_rate_drops: s.rate_drops,
    tx_injected_duplicates: s.duplicated,
    tx_injected_reorders: s.reordered,
    tx_injected_corruptions: s.corrupted,
  };
  // The receive-side bottleneck (`bottleneck=`): packets through, dropped for a full buffer,
  // the deepest the queue got, and what it holds now.
  const b = inj.ingressStats;
  out.rx_bottleneck_pkts = b.pkts;
  out.rx_bottleneck_bytes = b.bytes;
  out.rx_bottleneck_drops = b.drops;
  out.rx_bottleneck_queue_max_bytes = b.maxQueueBytes;
  out.rx_bottleneck_queue_bytes = inj.heldBytes;
  const c = co.stats;
  out.tx_dgrams = c.tx_dgrams;
  out.tx_bundles = c.tx_bundles;
  out.rx_dgrams = c.rx_dgrams;
  out.rx_bundles = c.rx_bundles;
  out.rx_drop_bad_bundle = c.rx_drop_bad_bundle;
  // Packets the socket carried per datagram: what batching bought (1 = none).
  out.packets_per_dgram = c.tx_dgrams === 0 ? 0 : Math.round((c.tx_coalesced_pkts / c.tx_dgrams) * 100) / 100;
  if (cap !== null) {
    out.capture_pkts = cap.packets;
    out.capture_dropped = cap.dropped;
  }
  return out;
}

/** Fills `{rank}`, `{name}` and `{pid}` in a capture path, so each rank can write its own file. */
export function expandCapturePath(template: string, name: string, rank: number | null): string {
  return template
    .replace(/\{rank\}/g, rank === null ? 'x' : String(rank))
    .replace(/\{name\}/g, name)
    .replace(/\{pid\}/g, String(process.pid));
}
