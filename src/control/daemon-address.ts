/** The text form of a daemon's address, as the CLI, the environment and the launcher give it. */
import { InvalidArgumentError } from '../common/errors';
import { DEFAULT_DAEMON_PORT, isValidPort } from './protocol';

/**
 * Parses a daemon address: `host:port`, `:port` or `port` (host defaults to 127.0.0.1),
 * or `[v6host]:port`. Throws InvalidArgumentError for anything else.
 */
export function parseDaemonAddress(text: string): { host: string; port: number } {
  if (typeof text !== 'string') throw new InvalidArgumentError('daemon address must be a string like 127.0.0.1:18515');
  const s = text.trim();
  const bad = (why: string): never => {
    throw new InvalidArgumentError(`daemon address ${JSON.stringify(text)} is not valid: ${why} (expected host:port, :port or port, e.g. 127.0.0.1:${DEFAULT_DAEMON_PORT})`);
  };
  let host = '127.0.0.1';
  let portText: string;
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close < 0 || s[close + 1] !== ':') return bad('a bracketed IPv6 host must be followed by :port');
    host = s.slice(1, close);
    if (host === '') bad('empty host');
    portText = s.slice(close + 2);
  } else {
    const colon = s.lastIndexOf(':');
    if (colon < 0) {
      portText = s;
    } else {
      if (s.indexOf(':') !== colon) bad('an IPv6 host must be written in brackets, as [::1]:port');
      if (colon > 0) host = s.slice(0, colon);
      portText = s.slice(colon + 1);
    }
  }
  if (!/^[0-9]{1,5}$/.test(portText)) bad('the port is not a number');
  const port = Number(portText);
  if (!isValidPort(port)) bad('the port must be in 1..65535');
  if (/\s/.test(host)) bad('the host contains whitespace');
  return { host, port };
}
