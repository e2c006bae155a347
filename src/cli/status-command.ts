import type { Command } from 'commander';
import { rootLogger } from '../common/logger';
import { DaemonClient } from '../control/client';
import { parseHostPort, readRankEnv } from '../env';
import { InvalidArgumentError } from '../common/errors';

export function registerStatusCommand(program: Command): void {
  program
    .command('status')
    .description('list the devices a daemon knows, with their state and main counters')
    .option('--daemon <host:port>', 'the daemon (default: EFA_EMU_DAEMON or 127.0.0.1:18515)')
    .option('--json', 'print one JSON object')
    .option('--paths', "also list each device's SRD paths: packets sent, resent and lost on each, packets received, smoothed RTT, times taken out of use")
    .option('--watch [seconds]', 'refresh every N seconds (default 1) until Ctrl-C; in place on a terminal')
    .action(async (o: { daemon?: string; json?: boolean; watch?: boolean | string; paths?: boolean }) => {
      const paths = o.paths === true;
      const addr = o.daemon !== undefined ? parseHostPort(o.daemon, '--daemon') : readRankEnv().daemon;
      const client = await DaemonClient.connect({ host: addr.host, port: addr.port, logger: rootLogger(), reconnect: false });
      try {
        if (o.watch === undefined || o.watch === false) {
          await printStatus(client, addr, o.json === true, paths);
          return;
        }
        const seconds = o.watch === true ? 1 : Number(o.watch);
        if (!(seconds > 0)) throw new InvalidArgumentError(`--watch: expected a number of seconds > 0, got ${String(o.watch)}`);
        let stop = false;
        const onSignal = (): void => {
          stop = true;
        };
        process.once('SIGINT', onSignal);
        process.once('SIGTERM', onSignal);
        try {
          while (!stop) {
            // Redraw in place on a terminal; piped, each refresh is appended.
            if (process.stdout.isTTY && !o.json) process.stdout.write('\x1b[H\x1b[2J');
            await printStatus(client, addr, o.json === true, paths);
            await new Promise<void>((resolve) => {
              const timer = setTimeout(resolve, seconds * 1000);
              const wake = (): void => {
                clearTimeout(timer);
                resolve();
              };
              process.once('SIGINT', wake);
              process.once('SIGTERM', wake);
            });
          }
        } finally {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
        }
      } finally {
        await client.close();
      }
    });
}

async function printStatus(client: DaemonClient, addr: { host: string; port: number }, json: boolean, paths: boolean): Promise<void> {
  const list = await client.list();
  if (json) {
    process.stdout.write(`${JSON.stringify({ daemon: `${addr.host}:${addr.port}`, ...list })}\n`);
    return;
  }
  const rows = list.devices.map((d) => [
    d.name,
    d.rank === null ? '-' : String(d.rank),
    d.gid,
    `${d.endpoint.host}:${d.endpoint.port}`,
    d.up ? 'up' : 'down',
    `${(d.lastSeenMsAgo / 1000).toFixed(1)}s`,
    String(d.stats?.tx_pkts ?? '-'),
    String(d.stats?.rx_pkts ?? '-'),
    String(d.stats?.rx_drops ?? '-'),
  ]);
  printTable(['NAME', 'RANK', 'GID', 'ENDPOINT', 'STATE', 'SEEN', 'TX_PKTS', 'RX_PKTS', 'RX_DROPS'], rows);
  if (!paths) return;
  const pathRows: string[][] = [];
  for (const d of list.devices) {
    const st = d.stats;
    if (st === undefined || st === null) continue;
    for (let p = 0; st[`path${p}_tx_pkts`] !== undefined; p++) {
      const v = (k: string): string => String(st[`path${p}_${k}`] ?? '-');
      pathRows.push([d.name, String(p), v('tx_pkts'), v('retrans_pkts'), v('lost_pkts'), v('rx_pkts'), v('rtt_us'), v('down_events')]);
    }
  }
  process.stdout.write('\n');
  printTable(['NAME', 'PATH', 'TX_PKTS', 'RETRANS', 'LOST', 'RX_PKTS', 'RTT_US', 'DOWN'], pathRows);
}

function printTable(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  process.stdout.write(`${line(head)}\n`);
  for (const r of rows) process.stdout.write(`${line(r)}\n`);
}
