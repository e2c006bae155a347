// The device bind address (EFA_EMU_HOST, openDevice's `host`): what is accepted, in which
// form it is announced, and that an address peers could not send to is refused before the
// daemon is even dialled.
import t, { type Test } from 'tap';
import { silentLogger } from '../src/common/logger';
import { startDaemon } from '../src/control/server';
import { DEFAULT_DEVICE_HOST, ENV_HOST, parseDeviceHost, readDeviceHost } from '../src/env';
import { openDevice } from '../src/open-device';

function throwsEinvalNaming(t: Test, fn: () => unknown, name: string, why: RegExp): void {
  try {
    fn();
    t.fail(`expected EINVAL naming ${name}`);
  } catch (err) {
    const e = err as Error & { code?: string };
    t.equal(e.code, 'EINVAL', `${name}: EINVAL`);
    t.match(e.message, name, `the message names ${name}`);
    t.match(e.message, why, 'and says why');
  }
}

t.test('names and defaults', async (t) => {
  t.equal(ENV_HOST, 'EFA_EMU_HOST');
  t.equal(DEFAULT_DEVICE_HOST, '127.0.0.1');
  t.equal(readDeviceHost({}), null);
  t.equal(readDeviceHost({ EFA_EMU_HOST: '' }), null, 'empty counts as unset');
  t.equal(readDeviceHost({ EFA_EMU_HOST: '  ' }), null, 'blank counts as unset');
});

t.test('addresses are returned as the kernel reports a source address', async (t) => {
  t.equal(readDeviceHost({ EFA_EMU_HOST: '10.213.0.2' }), '10.213.0.2');
  t.equal(readDeviceHost({ EFA_EMU_HOST: ' 10.0.0.7\n' }), '10.0.0.7', 'surrounding blanks are dropped');
  t.equal(parseDeviceHost('0:0:0:0:0:0:0:1', 'host'), '::1', 'IPv6 compressed');
  t.equal(parseDeviceHost('2001:DB8:0:0:0:0:0:1', 'host'), '2001:db8::1', 'IPv6 lower case');
  t.equal(parseDeviceHost('::ffff:10.0.0.1', 'host'), '::ffff:10.0.0.1', 'IPv4-mapped kept in its dotted form');
});

t.test('addresses peers could not use are refused, naming where they came from', async (t) => {
  throwsEinvalNaming(t, () => readDeviceHost({ EFA_EMU_HOST: '0.0.0.0' }), 'EFA_EMU_HOST', /wildcard/);
  throwsEinvalNaming(t, () => readDeviceHost({ EFA_EMU_HOST: '::' }), 'EFA_EMU_HOST', /wildcard/);
  throwsEinvalNaming(t, () => readDeviceHost({ EFA_EMU_HOST: '0:0::0' }), 'EFA_EMU_HOST', /wildcard/);
  throwsEinvalNaming(t, () => readDeviceHost({ EFA_EMU_HOST: 'localhost' }), 'EFA_EMU_HOST', /not an IPv4 or IPv6 address/);
  throwsEinvalNaming(t, () => readDeviceHost({ EFA_EMU_HOST: '10.0.0' }), 'EFA_EMU_HOST', /not an IPv4 or IPv6 address/);
  throwsEinvalNaming(t, () => readDeviceHost({ EFA_EMU_HOST: '10.0.0.1:5000' }), 'EFA_EMU_HOST', /not an IPv4 or IPv6 address/);
  throwsEinvalNaming(t, () => readDeviceHost({ EFA_EMU_HOST: 'fe80::1%eth0' }), 'EFA_EMU_HOST', /zone/);
  throwsEinvalNaming(t, () => parseDeviceHost('0.0.0.0', 'host'), 'host', /wildcard/);
});

t.test('openDevice refuses a wildcard before dialling the daemon', async (t) => {
  // Port 1 on loopback has no daemon: a check made after connecting would fail ECONNREFUSED.
  const daemon = '127.0.0.1:1';
  await t.rejects(openDevice({ name: 'w', daemon, host: '0.0.0.0', logger: silentLogger() }), { code: 'EINVAL', message: /host must be an IP address/ });
  const saved = process.env.EFA_EMU_HOST;
  process.env.EFA_EMU_HOST = '::';
  t.teardown(() => {
    if (saved === undefined) delete process.env.EFA_EMU_HOST;
    else process.env.EFA_EMU_HOST = saved;
  });
  await t.rejects(openDevice({ name: 'w', daemon, logger: silentLogger() }), { code: 'EINVAL', message: /EFA_EMU_HOST must be an IP address/ });
});

t.test('the device binds and announces EFA_EMU_HOST; the host option overrides it', async (t) => {
  const daemon = await startDaemon({ port: 0, statePath: null, logger: silentLogger() });
  t.teardown(() => daemon.close());
  const saved = process.env.EFA_EMU_HOST;
  t.teardown(() => {
    if (saved === undefined) delete process.env.EFA_EMU_HOST;
    else process.env.EFA_EMU_HOST = saved;
  });
  // 127.0.0.0/8 is all loopback on Linux: a second address without any setup.
  process.env.EFA_EMU_HOST = '127.0.0.2';
  const fromEnv = await openDevice({ name: 'from-env', daemon: daemon.address, rank: null, faults: null, capture: null, logger: silentLogger() });
  t.teardown(() => fromEnv.close());
  const fromOption = await openDevice({ name: 'from-option', daemon: daemon.address, host: '127.0.0.3', rank: null, faults: null, capture: null, logger: silentLogger() });
  t.teardown(() => fromOption.close());
  t.equal(fromEnv.endpoint.host, '127.0.0.2', 'EFA_EMU_HOST is bound');
  t.equal(fromOption.endpoint.host, '127.0.0.3', 'the option wins over EFA_EMU_HOST');
  const listed = Object.fromEntries((await fromEnv.daemon.list()).devices.map((d) => [d.name, d.endpoint]));
  t.same(listed['from-env'], fromEnv.endpoint, 'the daemon has the bound address, which peers will send to');
  t.same(listed['from-option'], fromOption.endpoint);
});
