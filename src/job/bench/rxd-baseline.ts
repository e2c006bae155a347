/*
 * libfabric's own software reliability over UDP (`udp;ofi_rxd`, Debian's libfabric-bin) as a
 * same-run yardstick for latency: fabtests' fi_pingpong, server and client on loopback, one
 * size at a time. Real SRD hardware is not here to compare with; rxd is the C stack doing the
 * same job (reliable datagrams over UDP) in the same machine's conditions.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';

/** One size's fi_pingpong figure. */
export interface RxdResult {
  size: number;
  iters: number;
  /** fi_pingpong's usec/xfer: the run's time over its transfers, i.e. one-way, an average. */
  usec_per_xfer: number;
}

/** Why the rxd row cannot be measured here, or null when fi_pingpong with rxd is available. */
export function rxdProblem(): string | null {
  const r = spawnSync('fi_info', ['-p', 'udp;ofi_rxd'], { encoding: 'utf8', timeout: 10_000 });
  if (r.error !== undefined) return 'fi_info not installed (apt-get install libfabric-bin)';
  if (r.status !== 0 || !/ofi_rxd/.test(r.stdout)) return "libfabric has no 'udp;ofi_rxd' provider here";
  const p = spawnSync('fi_pingpong', ['-h'], { encoding: 'utf8', timeout: 10_000 });
  if (p.error !== undefined) return 'fi_pingpong not installed (apt-get install libfabric-bin)';
  return null;
}

/** A TCP port free on loopback now (fi_pingpong's control connection needs one named). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

interface Proc {
  code: number | null;
  out: string;
}

function run(args: string[], timeoutMs: number): { done: Promise<Proc>; kill: () => void } {
  const child = spawn('fi_pingpong', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = new Promise<Proc>((resolve) => {
    child.on('error', () => resolve({ code: null, out }));
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
  return { done, kill: () => child.kill('SIGKILL') };
}

/** True once something listens on TCP `port` (from /proc/net/tcp{,6}), false at the deadline. */
async function listening(port: number, deadline: number): Promise<boolean> {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')} `;
  for (;;) {
    for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
      let text = '';
      try {
        text = fs.readFileSync(f, 'utf8');
      } catch {
        continue;
      }
      // Fields: sl local_address rem_address st ...; st 0A is LISTEN.
      for (const line of text.split('\n')) {
        const f2 = line.trim().split(/\s+/);
        if (f2.length > 3 && `${f2[1].slice(f2[1].indexOf(':'))} `.startsWith(hex) && f2[3] === '0A') return true;
      }
    }
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** fabtests' size labels (`64`, `1k`, `4m`) in bytes; NaN for anything else. */
function labelBytes(label: string): number {
  const m = /^(\d+(?:\.\d+)?)([kmg]?)$/.exec(label);
  if (m === null) return Number.NaN;
  return Math.round(Number(m[1]) * 1024 ** ' kmg'.indexOf(m[2] || ' '));
}

/** fi_pingpong's result row: `bytes #sent #ack total time MB/sec usec/xfer Mxfers/sec`. */
export function parseFiPingpong(text: string, size: number): number | null {
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 8 && labelBytes(f[0]) === size && /^\d/.test(f[1])) {
      const usec = Number(f[6]);
      if (Number.isFinite(usec) && usec > 0) return usec;
    }
  }
  return null;
}

/**
 * Runs `fi_pingpong -p "udp;ofi_rxd" -e rdm` for each size (server and client on 127.0.0.1),
 * bounded by `timeoutMs` a size. Sizes fi_pingpong fails on are left out, with the reason in
 * `errors`.
 */
export async function measureRxd(sizes: readonly number[], iters: number, timeoutMs = 120_000): Promise<{ results: RxdResult[]; errors: string[] }> {
  const results: RxdResult[] = [];
  const errors: string[] = [];
  for (const size of sizes) {
    const port = await freePort();
    const common = ['-p', 'udp;ofi_rxd', '-e', 'rdm', '-I', String(iters), '-S', String(size)];
    const server = run([...common, '-B', String(port)], timeoutMs);
    // The client does not retry its control connection: it starts once the server listens.
    // Seen in the kernel's socket table, since a probe connection would be taken for the client.
    if (!(await listening(port, Date.now() + 10_000))) {
      server.kill();
      const s = await server.done;
      errors.push(`${size} B: the fi_pingpong server never listened on ${port}: ${s.out.trim().split('\n').slice(-1)[0] ?? ''}`);
      continue;
    }
    const client = run([...common, '-P', String(port), '127.0.0.1'], timeoutMs);
    const c = await client.done;
    if (c.code !== 0) server.kill();
    await server.done;
    const usec = c.code === 0 ? parseFiPingpong(c.out, size) : null;
    if (usec === null) errors.push(`${size} B: fi_pingpong ${c.code === null ? 'timed out' : `exit ${c.code}`}: ${c.out.trim().split('\n').slice(-1)[0] ?? ''}`);
    else results.push({ size, iters, usec_per_xfer: usec });
  }
  return { results, errors };
}
