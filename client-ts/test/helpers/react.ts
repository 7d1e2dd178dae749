// react-test-renderer still works with React 19 but logs a deprecation notice
// on every render; it is the smallest DOM-less renderer, so we keep it and drop
// just that one line.
export function silenceTestRendererDeprecation(): void {
  const original = console.error
  console.error = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].includes('react-test-renderer is deprecated')) return
    original(...args)
  }
}
