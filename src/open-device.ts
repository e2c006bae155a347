import { hostname } from 'node:os';
import { rootLogger, type Logger } from './common/logger';
import { parseGid } from './common/gid';
import { DaemonClient } from './control/client';
import type { DeviceAttributes } from './device/attributes';
import { Device } from './device/device';
import { readRankEnv, parseHostPort, type HostPort } from './env';
import { UdpPort } from './io/udp-port';
import { TimerDriver } from './io/timer-driver';
import type { SrdConfig } from './srd/srd-config';

/** Options of {@link openDevice}; each falls back to the launcher's environment variables. */
export interface OpenDeviceOptions {
  /** Device name, stable across runs (the daemon keeps its GID). Default: `EFA_EMU_DEVICE_NAME`, else `efa<rank>`, else `efa-<host>-<pid>`. */
  name?: string;
  /** Control daemon, "host:port" or an object. Default: `EFA_EMU_DAEMON`, else 127.0.0.1:18515. */
  daemon?: string | HostPort;
  /** Address the device's UDP socket binds (loopback by default). */
  host?: string;
  /** UDP port (0, the default, lets the OS pick). */
  port?: number;
  /** This process's rank, reported to the daemon. Default: from the launcher's variables. */
  rank?: number | null;
  /** Overrides of the device attributes (limits, MTU). */
  attributes?: Partial<DeviceAttributes>;
  /** SRD tunables (window, RTO bounds, `unresponsiveTimeoutMs`, ...). */
  srd?: Partial<SrdConfig>;
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

  const client = await DaemonClient.connect({ host: daemonAddr.host, port: daemonAddr.port, logger });
  let port: UdpPort | null = null;
  try {
    port = await UdpPort.open({ host: opts.host, port: opts.port, logger });
    const endpoint = { host: port.host, port: port.port };
    const lease = await client.register({ name, endpoint, rank });
    const udp = port;
    let device: EfaDevice | null = null;
    const timer = new TimerDriver(performance.now.bind(performance), () => device?.onTimer());
    device = new EfaDevice({
      name,
      gid: parseGid(lease.gid),
      rank,
      attributes: opts.attributes,
      srd: opts.srd,
      timer,
      logger,
      transport: { sendPacket: (buf, len, host, p) => udp.send(buf, len, host, p) },
      resolver: (gid) => client.resolve(gid),
      onClose: async () => {
        timer.close();
        client.setStatsProvider(null);
        await udp.close();
        await client.close();
      },
    });
    device.daemon = client;
    device.worldSize = env.size;
    device.endpoint = endpoint;
    const dev = device;
    udp.onDatagram((buf, host, p) => dev.handleDatagram(buf, host, p));
    client.on('peer_down', (ev: { gid: string }) => dev.notifyPeerDown(ev.gid));
    client.on('peer_up', (ev: { gid: string; endpoint: HostPort }) => dev.notifyPeerUp(ev.gid, ev.endpoint));
    client.setStatsProvider(() => dev.stats.toJSON());
    device.logger.info({ endpoint, daemon: daemonAddr }, 'device opened');
    return device;
  } catch (err) {
    await port?.close();
    await client.close();
    throw err;
  }
}
