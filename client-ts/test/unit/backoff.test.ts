import { describe, expect, it } from 'vitest'
import { backoffDelay } from '../../src/index.js'

describe('backoffDelay', () => {
  it('grows exponentially up to the maximum', () => {
    const o = { initialDelayMs: 100, factor: 2, maxDelayMs: 1000, jitter: 0 }
    expect([0, 1, 2, 3, 4, 5, 50, 5000].map((a) => backoffDelay(a, o))).toEqual([100, 200, 400, 800, 1000, 1000, 1000, 1000])
  })

  it('jitter spreads the delay within [d·(1−jitter), d]', () => {
    const o = { initialDelayMs: 1000, jitter: 0.5 }
    expect(backoffDelay(0, o, () => 0)).toBe(1000)
    expect(backoffDelay(0, o, () => 0.999999)).toBe(500)
    for (let i = 0; i < 100; i++) {
      const d = backoffDelay(2, o)
      expect(d).toBeGreaterThanOrEqual(2000)
      expect(d).toBeLessThanOrEqual(4000)
    }
  })
})
