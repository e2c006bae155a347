/**
 * One error base class with a stable string `code`, and one subclass per family.
 * Callers branch on `code` (errno-style names as the verbs API uses them), never on messages.
 */
export class EfaError extends Error {
  /** Stable, machine-readable code such as `EINVAL` or `ENOMEM`. */
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A bad argument or option; the message names it. */
export class InvalidArgumentError extends EfaError {
  constructor(message: string) {
    super('EINVAL', message);
  }
}

/** A limit was reached (objects, queue slots). */
export class ResourceExhaustedError extends EfaError {
  constructor(message: string) {
    super('ENOMEM', message);
  }
}

/** An object was used outside its protection domain, or a privileged value was asked for. */
export class PermissionDeniedError extends EfaError {
  constructor(message: string) {
    super('EPERM', message);
  }
}

/** The operation is valid verbs but this device does not support it. */
export class NotSupportedError extends EfaError {
  constructor(message: string) {
    super('EOPNOTSUPP', message);
  }
}

/** An object is still referenced by others and cannot be destroyed yet. */
export class ResourceBusyError extends EfaError {
  constructor(message: string) {
    super('EBUSY', message);
  }
}

/** A completion queue received more completions than its depth: it is now unusable. */
export class CqOverrunError extends EfaError {
  constructor(message: string) {
    super('ECQOVERRUN', message);
  }
}

/** A wait ran out of time. */
export class TimeoutError extends EfaError {
  constructor(message: string) {
    super('ETIMEDOUT', message);
  }
}

/** The object was closed or destroyed and cannot be used again. */
export class ClosedError extends EfaError {
  constructor(message: string) {
    super('ECLOSED', message);
  }
}

/**
 * The control daemon answered a request with an error, or could not be reached.
 * `code` is the daemon's code (see the protocol in the README) or a socket errno.
 */
export class DaemonError extends EfaError {
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
