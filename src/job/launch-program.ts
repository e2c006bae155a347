/**
 * What makes a file runnable as a rank program. Shared by the launcher, which checks before
 * starting anything, and by the rank bootstrap, which runs alone under other launchers; kept
 * free of heavy imports because every rank loads it at startup.
 */
import fs from 'node:fs';
import path from 'node:path';

/** Program file extensions a rank can run (`.ts` compiled by the launcher, or transpiled as it loads). */
export const PROGRAM_EXTENSIONS = ['.js', '.cjs', '.mjs', '.ts'] as const;

/** Tells a rank where its launch's compiled TypeScript is (the manifest of ts-build.ts). */
export const ENV_TS_MANIFEST = 'EFA_EMU_TS_MANIFEST';

/** Exit code of a rank whose launcher went away (128 + SIGHUP, as a shell's children get). */
export const ORPHAN_EXIT_CODE = 129;

/**
 * Says why `file` cannot be run as a rank program, or returns null when it can: it must be an
 * existing, readable regular file with one of {@link PROGRAM_EXTENSIONS}.
 */
export function programProblem(file: string): string | null {
  const ext = path.extname(file).toLowerCase();
  if (!(PROGRAM_EXTENSIONS as readonly string[]).includes(ext)) {
    return `${file} must end in one of ${PROGRAM_EXTENSIONS.join(', ')}`;
  }
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (err) {
    return `${file} does not exist or cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`;
  }
  if (!st.isFile()) return `${file} is not a regular file`;
  try {
    fs.accessSync(file, fs.constants.R_OK);
  } catch {
    return `${file} is not readable`;
  }
  return null;
}
