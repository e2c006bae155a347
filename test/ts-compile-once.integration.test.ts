// A .ts rank program is compiled once by the launcher: its type errors stop the job before any
// rank starts (unless --no-typecheck), and the ranks load the compiled graph (imports of .ts
// files and of packages included) without a TypeScript compiler of their own.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { ROOT, runCli } from './helpers/run-cli';

const fixture = (name: string): string => path.join(ROOT, 'test', 'fixtures', name);

t.test('the ranks run the launcher-compiled graph, without loading a compiler', async (t) => {
  const run = await runCli(['launch', '-n', '3', fixture('ts-imports.ts')], { timeoutMs: 60_000 });
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-1500)})`);
  const lines = run.stdout.split('\n').filter((l) => l.includes('twice='));
  t.equal(lines.length, 3, 'every rank ran');
  for (const l of lines) t.match(l, /twice=42 commander=function compiler-loaded=false manifest=true/, 'imports resolved, no typescript or ts-node in the rank');
});

t.test('a type error stops the job before any rank starts; --no-typecheck runs it', async (t) => {
  // Written here, not kept in test/fixtures: the project's own build would refuse it.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-ts-error-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'ts-type-error.ts');
  fs.writeFileSync(file, "const n: number = 'seven' as unknown as string;\nconsole.log(`ran n=${n}`);\n");
  const bad = await runCli(['launch', '-n', '2', file], { timeoutMs: 60_000 });
  t.not(bad.code, 0, 'fails');
  t.match(bad.stderr, /ETSCOMPILE: .*ts-type-error\.ts does not compile \(1 error; --no-typecheck runs it anyway\)/, 'says it does not compile');
  t.match(bad.stderr, /error TS2322: Type 'string' is not assignable to type 'number'/, "with the compiler's message");
  t.notMatch(bad.stdout + bad.stderr, /ran n=|\[\d\]/, 'no rank started');
  const run = await runCli(['launch', '-n', '1', '--no-typecheck', file], { timeoutMs: 60_000 });
  t.equal(run.code, 0, 'runs with --no-typecheck');
  t.match(run.stdout, /\[0\] ran n=seven/);
});

t.test('a .ts program in a user package with "type": "module" that imports efa-emu runs', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-esm-user-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'esm-user', type: 'module' }));
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'efa-emu'), 'dir');
  const file = path.join(dir, 'prog.ts');
  fs.writeFileSync(file, "import { DEFAULT_ATTRIBUTES, readRankEnv } from 'efa-emu';\nconsole.log(`esm user rank ${readRankEnv().rank} sees ${DEFAULT_ATTRIBUTES.generation}`);\n");
  const run = await runCli(['launch', '-n', '2', file], { timeoutMs: 60_000 });
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr.slice(-1500)})`);
  t.match(run.stdout, /\[0\] esm user rank 0 sees efa3/);
  t.match(run.stdout, /\[1\] esm user rank 1 sees efa3/);
});
