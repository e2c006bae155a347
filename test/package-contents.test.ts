// What `npm pack` would ship: the license, the Wireshark dissector, the compiled library, CLI
// and examples, and nothing of the tests; and runtime dependencies that the shipped code uses.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import t from 'tap';
import { loadTypeScript } from '../src/job/typescript-loader';
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
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string>; peerDependencies?: Record<string, string>; peerDependenciesMeta?: Record<string, { optional?: boolean }>; license: string };
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
    const used = new RegExp(`['"]${dep.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}(/[^'"]*)?['"]`).test(text);
    t.ok(used, `runtime dependency ${dep} is used by src/ or bin/`);
  }
  // The compiler is for .ts rank programs only: their project brings it (optional peer).
  for (const dep of ['typescript', 'ts-node']) t.notOk(dep in pkg.dependencies, `${dep} is not a runtime dependency`);
  t.same(pkg.peerDependenciesMeta?.typescript, { optional: true }, 'typescript is an optional peer dependency');
  t.ok(pkg.peerDependencies?.typescript !== undefined, 'with a version range');
  for (const dev of ['tap', 'fast-check', '@types/node']) t.notOk(dev in pkg.dependencies, `${dev} is not a runtime dependency`);
});

t.test("a .ts program's own project's TypeScript compiler is used before efa-emu's", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-tsdep-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dir, 'node_modules', 'typescript'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'node_modules', 'typescript', 'index.js'), "module.exports = { marker: 'the project compiler' };");
  fs.writeFileSync(path.join(dir, 'prog.ts'), '');
  t.equal((loadTypeScript(path.join(dir, 'prog.ts')) as unknown as { marker?: string }).marker, 'the project compiler');
  const elsewhere = path.join(os.tmpdir(), 'no-project-here', 'prog.ts');
  t.equal(typeof loadTypeScript(elsewhere).transpileModule, 'function', "elsewhere, the one efa-emu resolves (its development install)");
});
