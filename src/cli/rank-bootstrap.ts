/**
 * The first code each rank runs: `node rank-bootstrap.js <program> [...args]`.
 *
 * It ties the rank's life to its launcher, makes TypeScript programs runnable, and then runs
 * the program as the process's main module, so that the program sees the usual `process.argv`
 * and `require.main === module`.
 */
import Module from 'node:module';
import path from 'node:path';
import { ORPHAN_EXIT_CODE, programProblem } from './launch-program';

// This file is an entry point only: importing it would start a program, so it exports nothing.

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
  if (isTs) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const tsNode = require('ts-node') as typeof import('ts-node');
      tsNode.register({
        transpileOnly: true,
        // The program's own tsconfig applies (paths, target), found from its folder, not from
        // wherever the launcher was started; the module kind is forced because ranks are loaded
        // through require.
        projectSearchDir: path.dirname(program),
        compilerOptions: { module: 'commonjs' },
      });
    } catch (err) {
      fail(`cannot run ${program}: TypeScript support (ts-node) failed to load: ${describe(err)}`);
    }
  }

  process.argv = [process.execPath, program, ...process.argv.slice(3)];

  try {
    if (isTs) runCommonJsMain(program);
    // runMain is how Node itself starts an entry point: it makes the program the main module
    // and picks CommonJS or ESM (.mjs, "type": "module") as `node program.js` would.
    else Module.runMain(program);
  } catch (err) {
    // Only failures to load or compile the program get the short message; an exception the
    // program throws while running is rethrown so Node reports it (and exits 1) as usual.
    if (isLoadError(err, program)) fail(`cannot load ${program}: ${describe(err)}`);
    throw err;
  }
}

/**
 * Loads a TypeScript program through the CommonJS loader, where ts-node's hook lives, as the
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
  if (code === 'ERR_REQUIRE_ESM' || code === 'ERR_UNKNOWN_FILE_EXTENSION') return true;
  if (code === 'MODULE_NOT_FOUND' && err.message.startsWith(`Cannot find module '${program}'`)) return true;
  // ts-node's compile errors; kept by name so typescript is not loaded for plain JS programs.
  if (err.name === 'TSError') return true;
  return false;
}

main();
