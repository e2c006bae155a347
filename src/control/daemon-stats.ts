/** The daemon's counters. A module of its own: every part of the daemon counts into them. */

/** The request errors counted as "bad requests" (malformed input, not failed operations). */
const BAD_REQUEST_CODES = new Set(['EBADMSG', 'EINVAL', 'ENOSYS', 'EMSGSIZE']);

/**
 * Counters of a running daemon. Plain fields for cheap increments; {@link toJSON} gives a
 * snapshot for logs, tests and the status command.
 */
export class DaemonStats {
  connectionsAccepted = 0;
  connectionsOpen = 0;
  requests = 0;
  /** Malformed requests by code: EBADMSG, EINVAL, ENOSYS, EMSGSIZE. */
  readonly badRequests = new Map<string, number>();
  /** Every error reply by code, bad requests included. */
  readonly errors = new Map<string, number>();
  registrations = 0;
  leasesCreated = 0;
  heartbeats = 0;
  heartbeatTimeouts = 0;
  eventsSent = 0;
  /** get and barrier calls currently waiting. */
  waitsOpen = 0;
  /** Connections dropped for not reading their replies. */
  slowConnectionsDropped = 0;
  /** Connections refused because `maxConnections` were open. */
  connectionsRefused = 0;
  /** Connections closed for making no successful request within `idleTimeoutMs`. */
  idleConnectionsClosed = 0;
  /** Requests refused with EACCES (missing or wrong token). */
  authFailures = 0;
  /** Connections closed after too many EACCES replies. */
  authConnectionsClosed = 0;

  /** Counts an error reply. */
  countError(code: string): void {
    this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
    if (BAD_REQUEST_CODES.has(code)) this.badRequests.set(code, (this.badRequests.get(code) ?? 0) + 1);
  }

  /** Total malformed requests. */
  get badRequestsTotal(): number {
    let n = 0;
    for (const v of this.badRequests.values()) n += v;
    return n;
  }

  toJSON(): Record<string, unknown> {
    return {
      connectionsAccepted: this.connectionsAccepted,
      connectionsOpen: this.connectionsOpen,
      requests: this.requests,
      badRequests: Object.fromEntries(this.badRequests),
      badRequestsTotal: this.badRequestsTotal,
      errors: Object.fromEntries(this.errors),
      registrations: this.registrations,
      leasesCreated: this.leasesCreated,
      heartbeats: this.heartbeats,
      heartbeatTimeouts: this.heartbeatTimeouts,
      eventsSent: this.eventsSent,
      waitsOpen: this.waitsOpen,
      slowConnectionsDropped: this.slowConnectionsDropped,
      connectionsRefused: this.connectionsRefused,
      idleConnectionsClosed: this.idleConnectionsClosed,
      authFailures: this.authFailures,
      authConnectionsClosed: this.authConnectionsClosed,
    };
  }
}

