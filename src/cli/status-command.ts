import type { Command } from 'commander';
import { rootLogger } from '../common/logger';
import { DaemonClient } from '../control/client';
import { parseHostPort, readRankEnv } from '../env';

export function registerStatusCommand(program: Command): void {
  program
    .command('status')
    .description('list the devices a daemon knows, with their state and main counters')
    .option('--daemon <host:port>', 'the daemon (default: EFA_EMU_DAEMON or 127.0.0.1:18515)')
    .option('--json', 'print one JSON object')
    .action(async (o: { daemon?: string; json?: boolean }) => {
      const addr = o.daemon !== undefined ? parseHostPort(o.daemon, '--daemon') : readRankEnv().daemon;
      const client = await DaemonClient.connect({ host: addr.host, port: addr.port, logger: rootLogger(), reconnect: false });
      try {
        const list = await client.list();
        if (o.json) {
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
      } finally {
        await client.close();
      }
    });
}

function printTable(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  process.stdout.write(`${line(head)}\n`);
  for (const r of rows) process.stdout.write(`${line(r)}\n`);
}
