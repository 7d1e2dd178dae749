import { RoostError } from '../../src/index.js'

/** Awaits a promise that must reject with a RoostError, and returns that error. */
export async function failure(promise: Promise<unknown>): Promise<RoostError> {
  try {
    await promise
  } catch (e) {
    if (e instanceof RoostError) return e
    throw e
  }
  throw new Error('expected the promise to reject')
}
