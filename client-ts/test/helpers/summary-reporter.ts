// Prints one plain closing line, "N passed, N failed[, N skipped]", after the
// default reporter's summary, so scripts that read test output can count tests.
import type { Reporter } from 'vitest/node'

type Task = { type: string; mode?: string; result?: { state?: string }; tasks?: Task[] }

export default class SummaryReporter implements Reporter {
  // `onFinished` runs after the default reporter has printed its summary.
  onFinished(files: Task[] = [], errors: unknown[] = []): void {
    let passed = 0
    let failed = 0
    let skipped = 0
    const walk = (t: Task) => {
      if (t.type === 'test') {
        const state = t.result?.state
        if (state === 'pass') passed++
        else if (state === 'fail') failed++
        else skipped++
      }
      for (const c of t.tasks ?? []) walk(c)
    }
    for (const f of files) {
      walk(f)
      // A file that failed to load has no tests but must not count as success.
      if (f.result?.state === 'fail' && (f.tasks ?? []).length === 0) failed++
    }
    failed += errors.length
    process.stdout.write(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`)
  }
}
