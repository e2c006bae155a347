/*
 * RDM endpoints on the discrete-event simulator: N devices, one endpoint each, every endpoint
 * in every other's AV. Endpoints run in manual progress on the simulator's clock; the
 * simulator calls their progress after each event, and their timers are simulator events.
 * Promise work (AV inserts, memory registration) runs between bounded slices of virtual time.
 */
import type { DeviceAttributes } from '../../src/device/attributes';
import { RdmEndpoint } from '../../src/rdm/rdm-endpoint';
import type { RdmConfig } from '../../src/rdm/rdm-config';
import type { SrdConfig } from '../../src/srd/srd-config';
import { SimNetwork } from './sim-network';

export interface RdmSimOptions {
  n?: number;
  seed?: number;
  faults?: string;
  srd?: Partial<SrdConfig>;
  rdm?: Partial<RdmConfig>;
  /** Per-endpoint overrides (by index). */
  perEp?: (i: number) => Partial<RdmConfig>;
  /** Per-device attribute overrides (e.g. a generation without RDMA read). */
  attributes?: (i: number) => Partial<DeviceAttributes> | undefined;
  generation?: (i: number) => string | undefined;
}

export interface RdmSim {
  sim: SimNetwork;
  eps: RdmEndpoint[];
  /** addr[i][j]: the fi_addr of endpoint j in endpoint i's AV. */
  addr: number[][];
  /** Runs virtual time (and promise work) until `pred` holds or `maxMs` of virtual time passed. */
  run(pred: () => boolean, maxMs: number): Promise<boolean>;
  /** Stops delivering events to endpoint `i` (its process froze or died). */
  freeze(i: number): void;
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

export async function rdmSim(opts: RdmSimOptions = {}): Promise<RdmSim> {
  const n = opts.n ?? 2;
  const sim = new SimNetwork({
    seed: opts.seed ?? 1,
    faults: opts.faults,
    srd: { unresponsiveTimeoutMs: 400, minRtoMs: 0.5, maxRtoMs: 20, initialRtoMs: 2, ...(opts.srd ?? {}) },
  });
  const eps: RdmEndpoint[] = [];
  const frozen = new Set<number>();
  for (let i = 0; i < n; i++) {
    const gen = opts.generation?.(i);
    const node = sim.addDevice(`efa${i}`, { ...(gen !== undefined ? { generation: gen } : {}), attributes: opts.attributes?.(i) });
    const index = i;
    const ep = await RdmEndpoint.open(node.device, {
      progress: 'manual',
      probeIntervalMs: 50,
      rnrTimeoutMs: 2000,
      ...(opts.rdm ?? {}),
      ...(opts.perEp?.(i) ?? {}),
      clock: () => sim.now,
      seed: (opts.seed ?? 1) * 31 + i,
      env: {},
      timer: (e) => {
        let live = true;
        return {
          arm: (deadline: number) => {
            if (live) sim.at(Math.max(deadline, sim.now), () => !frozen.has(index) && e.progress());
          },
          cancel: () => {
            live = false;
          },
        };
      },
    });
    eps.push(ep);
  }
  const addr: number[][] = [];
  for (let i = 0; i < n; i++) {
    addr.push([]);
    for (let j = 0; j < n; j++) addr[i].push(await eps[i].av.insert(eps[j].getName()));
  }
  sim.afterEvent = () => {
    for (let i = 0; i < n; i++) if (!frozen.has(i)) eps[i].progress();
  };
  const run = async (pred: () => boolean, maxMs: number): Promise<boolean> => {
    const end = sim.now + maxMs;
    for (;;) {
      if (pred()) return true;
      if (sim.now >= end) return pred();
      // A predicate may consume what it checks (a CQ read): its first true is the answer.
      if (sim.runUntil(pred, Math.min(end, sim.now + 0.25))) return true;
      await tick();
      for (let i = 0; i < n; i++) if (!frozen.has(i)) eps[i].progress();
    }
  };
  return { sim, eps, addr, run, freeze: (i) => frozen.add(i) };
}
