// What `npm pack` would ship: the license, the Wireshark dissector, the compiled library, CLI
// and examples, and nothing of the tests; and runtime dependencies that the shipped code uses.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { ROOT } from './helpers/run-cli';

interface PackEntry {
  path: string;
}

function packList(): Promise<string[]> {
  return new Promise((resolve, reject) => {
    // --ignore-scripts: `prepare` would rebuild dist/ under the other tests' feet.
    execFile('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8', timeout: 60_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`npm pack: ${err.message}\n${stderr}`));
      const [info] = JSON.parse(stdout) as Array<{ files: PackEntry[] }>;
      resolve(info.files.map((f) => f.path));
    });
  });
}

t.test('npm pack ships the license, the dissector and the build, not the tests', async (t) => {
  const files = await packList();
  for (const f of ['LICENSE', 'README.md', 'package.json', 'bin/efa-emu.js', 'dist/src/index.js', 'dist/src/index.d.ts', 'contrib/wireshark/efa-emu.lua', 'contrib/wireshark/README.md', 'dist/examples/rdma-write-imm.js']) {
    t.ok(files.includes(f), `ships ${f}`);
  }
  t.same(files.filter((f) => f.startsWith('test/') || f.startsWith('dist/test/') || f.startsWith('.ci/')), [], 'no tests, no CI scripts');
  t.match(fs.readFileSync(path.join(ROOT, 'LICENSE'), 'utf8'), /^MIT License/, 'the license is the MIT text package.json names');
});

t.test('every runtime dependency is used by the shipped code; test tools are dev-only', async (t) => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string>; license: string };
  t.equal(pkg.license, 'MIT');
  const sources: string[] = [];
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(ts|js)$/.test(e.name)) sources.push(fs.readFileSync(p, 'utf8'));
    }
  };
  walk(path.join(ROOT, 'src'));
  walk(path.join(ROOT, 'bin'));
  const text = sources.join('\n');
  for (const dep of Object.keys(pkg.dependencies)) {
    // typescript is ts-node's compiler (its peer dependency): the launcher runs .ts ranks with it.
    const used = dep === 'typescript' ? 'ts-node' in pkg.dependencies : new RegExp(`['"]${dep.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}(/[^'"]*)?['"]`).test(text);
    t.ok(used, `runtime dependency ${dep} is used by src/ or bin/`);
  }
  for (const dev of ['tap', 'fast-check', '@types/node']) t.notOk(dev in pkg.dependencies, `${dev} is not a runtime dependency`);
});
