/*
 * Compiles a TypeScript rank program once per launch, not once per rank: the launcher
 * type-checks the program and everything it imports, emits CommonJS for every TypeScript file
 * of that graph into a temporary folder, and lists them in a manifest; each rank then loads
 * `.ts` files from the manifest with a plain require hook (rank-bootstrap.ts) instead of
 * starting a TypeScript compiler of its own. The compiled code is loaded under the original
 * file names, so imports resolve from where the sources are (node_modules included) and
 * stack traces name the `.ts` files (inline source maps).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EfaError } from '../common/errors';
import { errorLines, loadTypeScript, projectCompilerOptions } from './typescript-loader';

/** The program (or a file it imports) has TypeScript errors: nothing was started. */
export class TypeScriptError extends EfaError {
  /** The compiler's messages, one per diagnostic, `file:line:col - error TSnnnn: text`. */
  readonly diagnostics: string[];

  /** `typeErrors`: the errors include type errors, which --no-typecheck would let through. */
  constructor(program: string, diagnostics: string[], typeErrors = true) {
    super('ETSCOMPILE', `${program} does not compile (${diagnostics.length} error${diagnostics.length === 1 ? '' : 's'}${typeErrors ? '; --no-typecheck runs it anyway' : ''}):\n${diagnostics.join('\n')}`);
    this.diagnostics = diagnostics;
  }
}

/** A compiled program: the manifest the ranks read, and how to remove the build. */
export interface TsBuild {
  /** JSON file mapping each absolute `.ts` path to its compiled `.js`. */
  manifest: string;
  /** TypeScript files compiled. */
  files: number;
  /** Milliseconds the build took. */
  ms: number;
  /** Removes the build folder (idempotent). */
  remove(): void;
}

/**
 * Type-checks (unless `typecheck` is false) and compiles `program` with the `tsconfig.json`
 * found from its folder upward (module forced to CommonJS, as ranks load through require).
 * Throws TypeScriptError listing the errors; nothing is written then.
 */
export function buildTsProgram(program: string, opts: { typecheck: boolean }): TsBuild {
  const started = performance.now();
  // Loaded only when a .ts program is launched: JavaScript jobs never pay for the compiler.
  const ts = loadTypeScript(program);
  const file = path.resolve(program);
  let options = projectCompilerOptions(ts, file, { target: ts.ScriptTarget.ES2022, strict: true, esModuleInterop: true, skipLibCheck: true });
  const outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'efa-emu-ts-'));
  options = {
    ...options,
    module: ts.ModuleKind.CommonJS,
    moduleResolution: ts.ModuleResolutionKind.Node10,
    outDir,
    rootDir: undefined,
    noEmit: false,
    noEmitOnError: false,
    declaration: false,
    declarationMap: false,
    composite: false,
    incremental: false,
    tsBuildInfoFile: undefined,
    sourceMap: false,
    inlineSourceMap: true,
    // No sources in the maps: the .ts files are on disk where the maps point, and every rank
    // parses and keeps each map (--enable-source-maps).
    inlineSources: false,
  };
  const remove = (): void => fs.rmSync(outDir, { recursive: true, force: true });
  try {
    const host = ts.createCompilerHost(options);
    const prog = ts.createProgram({ rootNames: [file], options, host });
    const diags = opts.typecheck ? ts.getPreEmitDiagnostics(prog) : prog.getSyntacticDiagnostics();
    const errors = errorLines(ts, diags);
    if (errors.length > 0) throw new TypeScriptError(program, errors);
    const map: Record<string, string> = {};
    prog.emit(undefined, (outName, text, _bom, _onError, sources) => {
      if (!outName.endsWith('.js') || sources === undefined || sources.length !== 1) return;
      const src = path.resolve(sources[0].fileName);
      const out = path.join(outDir, `${createHash('sha1').update(src).digest('hex').slice(0, 16)}.js`);
      fs.writeFileSync(out, pointMapAt(text, src));
      map[src] = out;
    });
    if (map[file] === undefined) throw new EfaError('ETSCOMPILE', `${program}: the compiler emitted nothing for it (is it excluded by its tsconfig?)`);
    const manifest = path.join(outDir, 'manifest.json');
    fs.writeFileSync(manifest, JSON.stringify(map));
    return { manifest, files: Object.keys(map).length, ms: performance.now() - started, remove };
  } catch (err) {
    remove();
    throw err;
  }
}

/**
 * The emitted inline source map names its source relative to the output folder; the code is
 * loaded under the source's own path, so the map must name that path.
 */
function pointMapAt(js: string, source: string): string {
  const marker = '//# sourceMappingURL=data:application/json;base64,';
  const at = js.lastIndexOf(marker);
  if (at < 0) return js;
  try {
    const map = JSON.parse(Buffer.from(js.slice(at + marker.length).trim(), 'base64').toString('utf8')) as { sources: string[]; sourceRoot?: string };
    map.sources = [source];
    delete map.sourceRoot;
    return `${js.slice(0, at)}${marker}${Buffer.from(JSON.stringify(map)).toString('base64')}\n`;
  } catch {
    return js;
  }
}
