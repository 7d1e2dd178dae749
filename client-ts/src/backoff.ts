/**
 * Reconnection delays: exponential backoff with jitter.
 * @module
 */

/** How long to wait between reconnection attempts. All fields are optional. */
export interface BackoffOptions {
  /** Delay before the first retry, in ms. Default 250. */
  initialDelayMs?: number
  /** Upper bound of the delay, in ms. Default 10 000. */
  maxDelayMs?: number
  /** Growth factor per failed attempt. Default 2. */
  factor?: number
  /**
   * Fraction of the delay that is randomized, 0..1. Default 0.5: the delay is
   * uniformly distributed in `[d·(1−jitter), d]`, which spreads out many clients
   * reconnecting after the same server restart.
   */
  jitter?: number
  /** Give up (status `closed`) after this many consecutive failed attempts. Default: never. */
  maxRetries?: number
}

/** The defaults of {@link BackoffOptions}. */
export const DEFAULT_BACKOFF: Required<BackoffOptions> = {
  initialDelayMs: 250,
  maxDelayMs: 10_000,
  factor: 2,
  jitter: 0.5,
  maxRetries: Number.POSITIVE_INFINITY,
}

/**
 * The delay before retry number `attempt` (0 for the first retry).
 * `random` returns a number in [0, 1) (injectable for tests).
 */
export function backoffDelay(attempt: number, options: BackoffOptions = {}, random: () => number = Math.random): number {
  const o = { ...DEFAULT_BACKOFF, ...options }
  const exp = Math.min(o.maxDelayMs, o.initialDelayMs * Math.pow(o.factor, Math.max(0, Math.min(attempt, 64))))
  const jitter = Math.min(1, Math.max(0, o.jitter))
  return Math.round(exp * (1 - jitter * random()))
}
