/**
 * The first code each rank runs: `node rank-bootstrap.js <program> [...args]`.
 *
 * It ties the rank's life to its launcher, makes TypeScript programs runnable, and then runs
 * the program as the process's main module, so that the program sees the usual `process.argv`
 * and `require.main === module`.
 */
import fs from 'node:fs';
import Module from 'node:module';
import path from 'node:path';
import { ENV_TS_MANIFEST, ORPHAN_EXIT_CODE, programProblem } from './launch-program';
import { registerTsHook, tsLoader } from './ts-require-hook';

// This file is an entry point: importing it starts a program (main() runs below unless it is
// required by a test for programStack).

function fail(message: string): never {
  process.stderr.write(`efa-emu rank-bootstrap: ${message}\n`);
  process.exit(1);
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function main(): void {
  // A launcher talks to its ranks over an IPC pipe only so that they notice its death: the
  // pipe closes when the launcher exits in any way, SIGKILL included, which no signal handler
  // could observe.
  if (typeof process.send === 'function' && process.channel) {
    process.on('disconnect', () => process.exit(ORPHAN_EXIT_CODE));
    // Unref after adding the listener: an explicit unref stays in force, whereas listeners
    // would otherwise re-ref the channel and keep a finished program alive.
    process.channel.unref();
  }

  const programArg = process.argv[2];
  if (programArg === undefined || programArg === '') fail('usage: rank-bootstrap <program> [args...]');
  const program = path.resolve(programArg);
  const problem = programProblem(program);
  if (problem !== null) fail(`cannot run ${problem}`);

  const isTs = path.extname(program).toLowerCase() === '.ts';
  const manifest = process.env[ENV_TS_MANIFEST];
  if (isTs && manifest !== undefined && manifest !== '') {
    try {
      loadCompiled(manifest);
    } catch (err) {
      fail(`cannot run ${program}: the launcher's compiled TypeScript (${manifest}) cannot be read: ${describe(err)}`);
    }
  } else if (isTs) {
    try {
      registerTsHook(program);
    } catch (err) {
      fail(`cannot run ${program}: ${describe(err)}`);
    }
  }

  process.argv = [process.execPath, program, ...process.argv.slice(3)];

  try {
    if (isTs) runCommonJsMain(program);
    // runMain is how Node itself starts an entry point: it makes the program the main module
    // and picks CommonJS or ESM (.mjs, "type": "module") as `node program.js` would.
    else Module.runMain(program);
    // The program is loaded (its synchronous part ran): the launcher may start the next ranks.
    if (typeof process.send === 'function' && process.connected) {
      try {
        process.send({ efaEmu: 'started' });
      } catch {
        // The launcher is gone; the disconnect handler ends this rank.
      }
    }
  } catch (err) {
    // Only failures to load or compile the program get the short message. An exception the
    // program throws while it starts is reported as Node would report it, but with the
    // program's own stack: rethrown, Node would point at this file's rethrow.
    if (isLoadError(err, program)) fail(`cannot load ${program}: ${describe(err)}`);
    fs.writeSync(2, `${programStack(err)}\n`);
    process.exit(1);
  }
}

/**
 * The error's stack without the frames of this bootstrap and of Node's module loader below
 * the program: what `node program.js` would have shown.
 */
export function programStack(err: unknown): string {
  if (!(err instanceof Error) || typeof err.stack !== 'string') return `Uncaught ${String(err)}`;
  const lines = err.stack.split('\n');
  const frames = lines.filter((l) => /^\s+at /.test(l));
  const head = lines.slice(0, lines.length - frames.length);
  // Frames from the first one inside this file on are the launcher's, not the program's.
  const cut = frames.findIndex((l) => l.includes(__filename) || l.includes('rank-bootstrap.'));
  let own = cut < 0 ? frames : frames.slice(0, cut);
  // The loader frames just above it (Module._compile, ...) are not the program's either.
  while (own.length > 1 && /\(node:internal\/|at node:internal\//.test(own[own.length - 1])) own = own.slice(0, -1);
  return [...head, ...own].join('\n');
}

/**
 * Loads `.ts` files from what the launcher compiled for this launch (the manifest maps each
 * source to its JavaScript), under the source's own name so that its imports resolve from
 * the source's folder. A `.ts` file the launcher did not see (required by a computed path)
 * is transpiled on the spot (ts-require-hook.ts).
 */
function loadCompiled(manifestPath: string): void {
  const compiled = JSON.parse(fs.readFileSync(manifestPath, 'utf8')) as Record<string, string>;
  const exts = (Module as unknown as { _extensions: Record<string, (m: NodeModule, filename: string) => void> })._extensions;
  let fallback: ((m: NodeModule, filename: string) => void) | null = null;
  exts['.ts'] = (m, filename) => {
    const js = compiled[filename];
    if (js !== undefined) {
      (m as unknown as { _compile(code: string, filename: string): void })._compile(fs.readFileSync(js, 'utf8'), filename);
      return;
    }
    // A .ts file outside the launcher's build (a computed require): transpiled here, with
    // the compiler of the program's project.
    fallback ??= tsLoader(filename);
    fallback(m, filename);
  };
}

/**
 * Loads a TypeScript program through the CommonJS loader, where the .ts hook lives, as the
 * main module. `Module.runMain` cannot be used for it: as soon as any `--import`/`--loader` is
 * in effect (NODE_OPTIONS from a test runner or an APM agent), it hands the entry point to the
 * ESM loader, which rejects `.ts`. `Module._load(file, null, true)` is what runMain itself does
 * for CommonJS entry points.
 */
function runCommonJsMain(program: string): void {
  const load = (Module as unknown as { _load?: (request: string, parent: null, isMain: boolean) => unknown })._load;
  if (typeof load === 'function') load.call(Module, program, null, true);
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  else require(program);
}

function isLoadError(err: unknown, program: string): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ERR_REQUIRE_ESM' || code === 'ERR_UNKNOWN_FILE_EXTENSION' || code === 'ETSCOMPILE') return true;
  if (code === 'MODULE_NOT_FOUND' && err.message.startsWith(`Cannot find module '${program}'`)) return true;
  return false;
}

if (require.main === module) main();
