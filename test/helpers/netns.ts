/*
 * Several "hosts" on one machine: a Linux network namespace per host, each with one veth
 * whose other end is a port of a bridge in a namespace of its own (the switch), and an
 * address on a private /24. Everything lives inside namespaces this helper creates: the
 * veth pairs are made in the switch namespace with their far end moved straight into the
 * host's, so no interface ever appears in the machine's own namespace.
 *
 * Needs root and iproute2; netnsProblem() says why it cannot run (the test's skip reason).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';

/** One emulated host: a namespace with `eth0` on the shared subnet (and `lo` up). */
export interface NetnsHost {
  /** The name the test gave it (`d`, `a`, ...). */
  role: string;
  /** Its network namespace, `efaemu-<pid>-<role>`. */
  ns: string;
  /** Its address on the subnet, without the prefix length. */
  address: string;
}

/** What a process run inside a namespace left behind. */
export interface NsRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the deadline passed and the process was killed. */
  timedOut: boolean;
}

/** A process started inside a namespace, with its output collected as it comes. */
export interface NsProcess {
  child: ChildProcess;
  /** Everything written to stdout so far. */
  readonly stdout: string;
  /** Everything written to stderr so far. */
  readonly stderr: string;
  /** Resolves once the process has exited and its output is closed. */
  readonly exited: Promise<NsRun>;
}

export interface NetnsFabricOptions {
  /** Host names, one namespace each; their addresses are .1, .2, ... in this order. */
  roles: string[];
  /** The /24's first three octets. Namespaces are private, so a fixed one cannot clash with another run. */
  subnet?: string;
  /** How long links may take to come up before setup fails. */
  readyTimeoutMs?: number;
}

const NAME_PREFIX = 'efaemu-';
const SWITCH_ROLE = 'sw';
/** Namespace names of fabrics not torn down yet, across this process. */
const live = new Set<string>();
let hooksInstalled = false;
let probed: string | false | undefined;

/** Runs `ip` synchronously; throws with its stderr on failure. */
function ip(args: string[]): string {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
  if (r.error !== undefined) throw new Error(`ip ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: exit ${r.status}: ${r.stderr.trim()}`);
  return r.stdout;
}

function tryIp(args: string[]): boolean {
  try {
    ip(args);
    return true;
  } catch {
    return false;
  }
}

function listNamespaces(): string[] {
  // Lines look like "name (id: 3)" or just "name".
  return ip(['netns', 'list'])
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((n) => n !== undefined && n !== '');
}

/**
 * Ends whatever still runs in a namespace of ours, then removes it. Deleting the name alone
 * would leave the namespace alive as long as any process is in it: the processes go first.
 */
function destroyNamespace(ns: string): void {
  const r = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', timeout: 10_000 });
  if (r.status === 0) {
    for (const text of r.stdout.split(/\s+/)) {
      const pid = Number(text);
      if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  }
  tryIp(['netns', 'del', ns]);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes namespaces an earlier run left (killed before its teardown): those named for a
 * process that is gone, or for this pid but not held by a live fabric of this process.
 */
export function removeStaleNamespaces(): string[] {
  const removed: string[] = [];
  for (const ns of listNamespaces()) {
    const m = /^efaemu-(\d+)-/.exec(ns);
    if (m === null || live.has(ns)) continue;
    const pid = Number(m[1]);
    if (pid !== process.pid && pidAlive(pid)) continue;
    destroyNamespace(ns);
    removed.push(ns);
  }
  return removed;
}

function teardownAllLive(): void {
  for (const ns of [...live]) {
    destroyNamespace(ns);
    live.delete(ns);
  }
}

/**
 * A test stopped by tap's timeout (SIGTERM) or by Ctrl-C runs no teardown of its own: the
 * namespaces and the processes in them are removed on the way out all the same.
 */
function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.once('exit', teardownAllLive);
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.once(sig, () => {
      teardownAllLive();
      process.exit(sig === 'SIGTERM' ? 143 : 130);
    });
  }
}

/**
 * Why network namespaces cannot be used here, or false when they can: not Linux, not root,
 * no `ip`, or the kernel or container refusing a namespace, a veth, a bridge or
 * `ip netns exec`. The answer is found by trying once, and cached.
 */
export function netnsProblem(): string | false {
  if (probed !== undefined) return probed;
  probed = findProblem();
  return probed;
}

function findProblem(): string | false {
  if (process.platform !== 'linux') return `network namespaces are Linux only (this is ${process.platform})`;
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'needs root (ip netns add, veth, bridge)';
  const v = spawnSync('ip', ['-V'], { encoding: 'utf8', timeout: 10_000 });
  if (v.error !== undefined) return 'ip (iproute2) not installed (apt-get install iproute2)';
  const ns = `${NAME_PREFIX}${process.pid}-probe`;
  try {
    destroyNamespace(ns);
    ip(['netns', 'add', ns]);
    ip(['-n', ns, 'link', 'add', 'br0', 'type', 'bridge']);
    ip(['-n', ns, 'link', 'add', 'p0', 'type', 'veth', 'peer', 'name', 'q0']);
    ip(['-n', ns, 'link', 'set', 'p0', 'master', 'br0']);
    ip(['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
    return false;
  } catch (err) {
    return `network namespaces refused here: ${(err as Error).message}`;
  } finally {
    destroyNamespace(ns);
  }
}

/** Hosts joined by one bridge, and the means to run processes on them. */
export class NetnsFabric {
  /** The namespace holding the bridge; no process runs there. */
  readonly switchNs: string;
  private readonly hostsByRole = new Map<string, NetnsHost>();
  private readonly children = new Set<ChildProcess>();
  private readonly namespaces: string[] = [];
  private torn = false;

  private constructor(readonly prefix: string) {
    this.switchNs = `${prefix}-${SWITCH_ROLE}`;
  }

  /**
   * Creates the namespaces, bridge, veths and addresses, and resolves once every link is up
   * and every bridge port forwards. On any failure what was made is removed before it rejects.
   */
  static async create(opts: NetnsFabricOptions): Promise<NetnsFabric> {
    const subnet = opts.subnet ?? '10.213.0';
    if (!/^\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(subnet)) throw new Error(`subnet must be three octets such as 10.213.0, got ${subnet}`);
    if (opts.roles.length === 0 || opts.roles.length > 250) throw new Error('between 1 and 250 hosts');
    for (const role of opts.roles) {
      // The role ends up in a namespace name and a veth name (at most 15 characters).
      if (!/^[a-z0-9]{1,8}$/.test(role) || role === SWITCH_ROLE) throw new Error(`bad role ${JSON.stringify(role)}`);
    }
    if (new Set(opts.roles).size !== opts.roles.length) throw new Error('roles must be distinct');
    const fabric = new NetnsFabric(`${NAME_PREFIX}${process.pid}`);
    installHooks();
    removeStaleNamespaces();
    try {
      fabric.build(opts.roles, subnet);
      await fabric.waitReady(opts.readyTimeoutMs ?? 10_000);
    } catch (err) {
      fabric.teardown();
      throw err;
    }
    return fabric;
  }

  private addNamespace(ns: string): void {
    if (live.has(ns)) throw new Error(`namespace ${ns} is held by another fabric of this process`);
    // Registered before it exists, so a failure half-way still removes it.
    live.add(ns);
    this.namespaces.push(ns);
    ip(['netns', 'add', ns]);
    ip(['-n', ns, 'link', 'set', 'lo', 'up']);
  }

  private build(roles: string[], subnet: string): void {
    const sw = this.switchNs;
    this.addNamespace(sw);
    ip(['-n', sw, 'link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0']);
    roles.forEach((role, i) => {
      const host: NetnsHost = { role, ns: `${this.prefix}-${role}`, address: `${subnet}.${i + 1}` };
      this.addNamespace(host.ns);
      const port = `p-${role}`;
      ip(['-n', sw, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.ns]);
      ip(['-n', sw, 'link', 'set', port, 'master', 'br0']);
      ip(['-n', sw, 'link', 'set', port, 'up']);
      ip(['-n', host.ns, 'addr', 'add', `${host.address}/24`, 'dev', 'eth0']);
      ip(['-n', host.ns, 'link', 'set', 'eth0', 'up']);
      this.hostsByRole.set(role, host);
    });
    ip(['-n', sw, 'link', 'set', 'br0', 'up']);
  }

  /** Polls link state (iproute2 has no one-shot wait) until all is up, or the deadline. */
  private async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const pending = this.notReady();
      if (pending.length === 0) return;
      if (Date.now() >= deadline) throw new Error(`links not up after ${timeoutMs} ms: ${pending.join(', ')}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  private notReady(): string[] {
    const pending: string[] = [];
    for (const host of this.hostsByRole.values()) {
      const [link] = JSON.parse(ip(['-n', host.ns, '-j', 'link', 'show', 'dev', 'eth0'])) as Array<{ operstate?: string }>;
      if (link?.operstate !== 'UP') pending.push(`${host.ns}/eth0 ${link?.operstate ?? 'missing'}`);
      const [port] = JSON.parse(ip(['-n', this.switchNs, '-d', '-j', 'link', 'show', 'dev', `p-${host.role}`])) as Array<{
        linkinfo?: { info_slave_data?: { state?: string } };
      }>;
      const state = port?.linkinfo?.info_slave_data?.state;
      if (state !== 'forwarding') pending.push(`bridge port p-${host.role} ${state ?? 'missing'}`);
    }
    return pending;
  }

  /** The host of a role given to create(). */
  host(role: string): NetnsHost {
    const h = this.hostsByRole.get(role);
    if (h === undefined) throw new Error(`no host ${role}`);
    return h;
  }

  /**
   * Starts `command` inside a host's namespace. `ip netns exec` replaces itself with the
   * command, so the child's pid is the command's own. The teardown kills it if it still runs.
   */
  spawn(role: string, command: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): NsProcess {
    if (this.torn) throw new Error('fabric torn down');
    const child = spawn('ip', ['netns', 'exec', this.host(role).ns, command, ...args], {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<NsRun>((resolve) => {
      child.on('error', (err) => {
        stderr += `spawn failed: ${err.message}\n`;
      });
      child.on('close', (code, signal) => {
        this.children.delete(child);
        resolve({ code, signal, stdout, stderr, timedOut: false });
      });
    });
    return {
      child,
      get stdout() {
        return stdout;
      },
      get stderr() {
        return stderr;
      },
      exited,
    };
  }

  /** Runs `command` in a host's namespace to its end, killed at the deadline so a hang fails instead of stalling. */
  async run(role: string, command: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs: number }): Promise<NsRun> {
    const p = this.spawn(role, command, args, opts);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      p.child.kill('SIGKILL');
    }, opts.timeoutMs);
    const r = await p.exited;
    clearTimeout(timer);
    return { ...r, timedOut };
  }

  /**
   * Removes the namespaces (the veths and the bridge go with them) after killing whatever
   * still runs in them. Synchronous, so it also serves the exit and signal hooks; idempotent.
   */
  teardown(): void {
    this.torn = true;
    for (const child of this.children) child.kill('SIGKILL');
    for (const ns of this.namespaces) {
      destroyNamespace(ns);
      live.delete(ns);
    }
  }

  /** The namespaces of this fabric that still exist (none after teardown). */
  remaining(): string[] {
    const mine = new Set(this.namespaces);
    return listNamespaces().filter((ns) => mine.has(ns));
  }
}

/**
 * Waits until `p`'s stdout has a line matching `re` and returns its match; rejects when the
 * process exits first or the deadline passes, with what it wrote.
 */
export function waitForLine(p: NsProcess, re: RegExp, timeoutMs: number): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    const check = (): boolean => {
      for (const line of p.stdout.split('\n')) {
        const m = line.match(re);
        if (m !== null) {
          finish();
          resolve(m);
          return true;
        }
      }
      return false;
    };
    const onData = (): void => {
      check();
    };
    const timer = setTimeout(() => {
      finish();
      reject(new Error(`no line matching ${re} within ${timeoutMs} ms; stdout: ${p.stdout.slice(-500)} stderr: ${p.stderr.slice(-1000)}`));
    }, timeoutMs);
    const finish = (): void => {
      clearTimeout(timer);
      p.child.stdout?.off('data', onData);
    };
    p.child.stdout?.on('data', onData);
    void p.exited.then((r) => {
      if (check()) return;
      finish();
      reject(new Error(`exited (code ${r.code}, signal ${r.signal}) before a line matching ${re}; stderr: ${r.stderr.slice(-1000)}`));
    });
    check();
  });
}

/** Resolves with how `p` ended, or null when it still runs after `timeoutMs`. */
export function waitForExit(p: NsProcess, timeoutMs: number): Promise<NsRun | null> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), timeoutMs);
    void p.exited.then((r) => {
      clearTimeout(timer);
      resolve(r);
    });
  });
}
