/*
 * A require hook that transpiles `.ts` files as they load (no type check), for ranks that
 * compile for themselves: `launch({ compileTs: false })`, a `.ts` program started by another
 * launcher through the rank bootstrap, and a `.ts` file the launcher's build did not see.
 */
import fs from 'node:fs';
import Module from 'node:module';
import { TypeScriptError } from './ts-build';
import { errorLines, loadTypeScript, projectCompilerOptions } from './typescript-loader';

type Loader = (m: NodeModule, filename: string) => void;

/**
 * Returns a loader for `.ts` files that transpiles each with `program`'s tsconfig options
 * (module forced to CommonJS, as ranks load through require; inline source maps, so stacks
 * name the `.ts` lines). Install it with {@link registerTsHook} or call it as a fallback.
 * @throws TypeScriptMissingError when no compiler can be found for `program`.
 */
export function tsLoader(program: string): Loader {
  const ts = loadTypeScript(program);
  let options = projectCompilerOptions(ts, program, { target: ts.ScriptTarget.ES2022, esModuleInterop: true });
  options = { ...options, module: ts.ModuleKind.CommonJS, sourceMap: false, inlineSourceMap: true, inlineSources: true, declaration: false, noEmit: false };
  return (m, filename) => {
    const out = ts.transpileModule(fs.readFileSync(filename, 'utf8'), { compilerOptions: options, fileName: filename, reportDiagnostics: true });
    // Only syntax is checked here (no types): code that does not parse must not run half-translated.
    const errors = errorLines(ts, out.diagnostics ?? []);
    if (errors.length > 0) throw new TypeScriptError(filename, errors, false);
    (m as unknown as { _compile(code: string, filename: string): void })._compile(out.outputText, filename);
  };
}

/** Installs {@link tsLoader} for every `.ts` file this process requires from now on. */
export function registerTsHook(program: string): void {
  const exts = (Module as unknown as { _extensions: Record<string, Loader> })._extensions;
  exts['.ts'] = tsLoader(program);
}
