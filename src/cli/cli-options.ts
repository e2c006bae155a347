import { InvalidArgumentError as CommanderArgError } from 'commander';

/** Commander argument parser for an integer in [min, max]; the message names the range. */
export function intOption(min: number, max: number): (value: string) => number {
  return (value: string): number => {
    const v = Number(value);
    if (!/^-?[0-9]+$/.test(value.trim()) || !Number.isSafeInteger(v) || v < min || v > max) {
      throw new CommanderArgError(`expected an integer in ${min}..${max}, got "${value}"`);
    }
    return v;
  };
}

/** Commander argument parser for one of a fixed set of words. */
export function choiceOption<T extends string>(choices: readonly T[]): (value: string) => T {
  return (value: string): T => {
    if (!(choices as readonly string[]).includes(value)) {
      throw new CommanderArgError(`expected one of ${choices.join(', ')}, got "${value}"`);
    }
    return value as T;
  };
}
