import { Command, CommanderError } from 'commander';
import { EfaError } from '../common/errors';
import { registerDaemonCommand } from './daemon-command';
import { registerLaunchCommand } from './launch-command';
import { registerPingPongCommand } from './pingpong-command';
import { registerStatusCommand } from './status-command';
import { registerBenchCommand } from './bench/bench-command';
import { registerFiCommands } from './fi/fi-command';
import { registerLabCommand } from './lab-command';

/** Builds the `efa-emu` command line. */
export function buildProgram(): Command {
  const program = new Command();
  program
    .name('efa-emu')
    .description('an emulated AWS Elastic Fabric Adapter fabric on UDP: devices, daemon, launcher, tools')
    .version((require('../../../package.json') as { version: string }).version)
    .enablePositionalOptions()
    // A usage error is one line with a stable code, as every other CLI failure is; --help
    // still prints the whole usage.
    .configureOutput({ outputError: (text, write) => write(usageErrorLine(text)) });
  registerDaemonCommand(program);
  registerLaunchCommand(program);
  registerPingPongCommand(program);
  registerStatusCommand(program);
  registerBenchCommand(program);
  registerFiCommands(program);
  registerLabCommand(program);
  return program;
}

/**
 * Commander's `error: option '--size <bytes>' argument 'abc' is invalid. ...` as
 * `efa-emu: EINVAL: option ... (--help lists the options)`, on one line.
 */
export function usageErrorLine(text: string): string {
  const message = text.replace(/^error: /, '').replace(/\s*\n\s*/g, ' ').trim();
  return `efa-emu: EINVAL: ${message} (--help lists the options)\n`;
}

/** Runs the CLI; errors print as `efa-emu: CODE: message` and set exit status 1. */
export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode;
      return;
    }
    const e = err as Error & { code?: string };
    const code = err instanceof EfaError || typeof e.code === 'string' ? `${e.code}: ` : '';
    process.stderr.write(`efa-emu: ${code}${e.message ?? String(err)}\n`);
    process.exitCode = 1;
  }
}
