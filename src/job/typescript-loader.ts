/*
 * TypeScript rank programs need a TypeScript compiler, but efa-emu does not ship one (it is an
 * optional peer dependency: ~25 MB that JavaScript users would carry for nothing). The compiler
 * is taken from the program's own project first, as a TypeScript project has one, then from
 * wherever efa-emu itself can find one (its development install).
 */
import Module from 'node:module';
import path from 'node:path';
import { EfaError } from '../common/errors';

type TypeScript = typeof import('typescript');

/** No TypeScript compiler could be found for a `.ts` program. */
export class TypeScriptMissingError extends EfaError {
  constructor(program: string) {
    super(
      'ENOTYPESCRIPT',
      `${program} is TypeScript, and no TypeScript compiler was found from its folder or from efa-emu's: install one in its project (npm install --save-dev typescript), or run its compiled JavaScript`,
    );
  }
}

/** The `typescript` module for `program`: its project's, else the one efa-emu can resolve. */
export function loadTypeScript(program: string): TypeScript {
  const fromProgram = Module.createRequire(path.resolve(program));
  for (const req of [fromProgram, require]) {
    try {
      return req('typescript') as TypeScript;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'MODULE_NOT_FOUND') throw err;
    }
  }
  throw new TypeScriptMissingError(program);
}

/**
 * The compiler options of `program`'s project: its `tsconfig.json` (found from its folder
 * upward), else `defaults`. Callers then force what loading through require needs.
 */
export function projectCompilerOptions(ts: TypeScript, program: string, defaults: import('typescript').CompilerOptions): import('typescript').CompilerOptions {
  const configPath = ts.findConfigFile(path.dirname(path.resolve(program)), ts.sys.fileExists, 'tsconfig.json');
  if (configPath === undefined) return defaults;
  const parsed = ts.getParsedCommandLineOfConfigFile(configPath, {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => undefined });
  return parsed?.options ?? defaults;
}

/** The error diagnostics among `diags`, one line each (`file:line:col - error TSnnnn: text`). */
export function errorLines(ts: TypeScript, diags: readonly import('typescript').Diagnostic[]): string[] {
  const fmt = { getCanonicalFileName: (f: string) => f, getCurrentDirectory: () => process.cwd(), getNewLine: () => '\n' };
  return diags.filter((d) => d.category === ts.DiagnosticCategory.Error).map((d) => ts.formatDiagnostic(d, fmt).trimEnd());
}
