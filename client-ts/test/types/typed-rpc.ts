// Type-level tests of typed RPC: checked by `npm run typecheck` (tsc -p
// tsconfig.test.json), never run. Every `@ts-expect-error` line must be an
// error, and every other line must not.
import { connect, createClient, createHttpClient, type ObjectSocket } from '../../src/index.js'
import { useEventReducer, useLatestEvent, useObjectEvent, useObjectSocket } from '../../src/react/index.js'

interface Counter {
  methods: {
    increment(args: { by: number }): number
    get(): number
    reset(args?: { to?: number }): Promise<number>
    describe(args: { verbose: boolean }): { value: number; label: string }
  }
  events: {
    changed: { value: number }
    reset: null
  }
}

/** Only events declared; calls untyped. */
interface EventsOnly {
  events: { tick: { n: number } }
}

type Equals<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false
function assertType<T extends true>(): T | undefined {
  return undefined
}

export async function typedSocket(): Promise<void> {
  const s = connect<Counter>({ url: 'http://x', class: 'counter', name: 'c' })

  const n = await s.call('increment', { by: 1 })
  assertType<Equals<typeof n, number>>()
  const g = await s.call('get')
  assertType<Equals<typeof g, number>>()
  await s.call('get', undefined, { timeout: 1000 })
  const r = await s.call('reset') // optional argument
  assertType<Equals<typeof r, number>>() // Promise unwrapped
  await s.call('reset', { to: 3 }, { timeout: 5 })
  const d = await s.call('describe', { verbose: true })
  assertType<Equals<typeof d, { value: number; label: string }>>()

  // @ts-expect-error unknown method
  await s.call('decrement', { by: 1 })
  // @ts-expect-error missing required arguments
  await s.call('increment')
  // @ts-expect-error wrong argument type
  await s.call('increment', { by: '1' })
  // @ts-expect-error excess property
  await s.call('increment', { by: 1, extra: true })
  // @ts-expect-error a method without arguments takes none
  await s.call('get', { x: 1 })
  // @ts-expect-error the result is a number, not a string
  const wrong: string = await s.call('get')
  void wrong
  // @ts-expect-error an explicit result type is for untyped sockets only
  await s.call<string>('get')

  s.on('changed', (e) => {
    assertType<Equals<typeof e, { value: number }>>()
  })
  s.on('reset', (e) => {
    assertType<Equals<typeof e, null>>()
  })
  // Built-in events are always there.
  s.on('auth', ({ exp }) => exp.toFixed())
  s.on('error', ({ code, message }) => code + message)
  // @ts-expect-error unknown event
  s.on('nope', () => {})
  // @ts-expect-error wrong data type in the listener
  s.on('changed', (e: { value: string }) => e)
  const fn = (e: { value: number }) => e
  s.on('changed', fn)
  s.off('changed', fn)
  // @ts-expect-error unknown event
  s.off('nope', fn)
}

export async function eventsOnly(): Promise<void> {
  const s = connect<EventsOnly>({ url: 'http://x', class: 'clock', name: 'c' })
  s.on('tick', ({ n }) => n.toFixed())
  // @ts-expect-error unknown event
  s.on('tock', () => {})
  // Methods are untyped: any name, result type by hand.
  const v = await s.call<number>('whatever', { a: 1 })
  assertType<Equals<typeof v, number>>()
}

export async function untypedSocket(): Promise<void> {
  // Unchanged: any name, `unknown` unless given.
  const s = connect({ url: 'http://x', class: 'room', name: 'r' })
  const a = await s.call('send', { text: 'hi' })
  assertType<Equals<typeof a, unknown>>()
  const b = await s.call<{ id: number }>('send', { text: 'hi' }, { timeout: 5 })
  assertType<Equals<typeof b, { id: number }>>()
  s.on<{ text: string }>('message', (m) => m.text.toUpperCase())
  s.on('message', (m) => {
    assertType<Equals<typeof m, unknown>>()
  })
  const untyped: ObjectSocket = s
  void untyped
}

export async function typedHttpAndClient(): Promise<void> {
  const http = createHttpClient({ url: 'http://x' })
  const stub = http.object<Counter>('counter', 'c')
  const n = await stub.call('increment', { by: 2 }, { timeout: 10 })
  assertType<Equals<typeof n, number>>()
  // @ts-expect-error unknown method
  await stub.call('decrement')
  // @ts-expect-error wrong argument type
  await stub.call('increment', { by: 'two' })
  const any = await http.object('counter', 'c').call<number>('increment', { by: 1 })
  assertType<Equals<typeof any, number>>()
  const untypedCall = await http.call<number>('counter', 'c', 'increment', { by: 1 })
  assertType<Equals<typeof untypedCall, number>>()

  const client = createClient({ url: 'http://x', token: () => 't' })
  const s = client.connect<Counter>('counter', 'c', { params: { a: 1 } })
  const g = await s.call('get')
  assertType<Equals<typeof g, number>>()
  // @ts-expect-error unknown method
  await client.object<Counter>('counter', 'c').call('nope')
}

export function typedHooks(): void {
  const { socket } = useObjectSocket<Counter>({ url: 'http://x', class: 'counter', name: 'c' })
  useObjectEvent(socket, 'changed', (e) => {
    assertType<Equals<typeof e, { value: number }>>()
  })
  // @ts-expect-error unknown event
  useObjectEvent(socket, 'nope', () => {})
  void socket?.call('increment', { by: 1 })
}

interface Message {
  id: number
  text: string
}
interface Room {
  methods: { send(args: { text: string }): { id: number } }
  events: { message: Message }
}

// The README's React example.
export function readmeChat(): void {
  const { socket, status, authFailure } = useObjectSocket<Room>({ class: 'room', name: 'lobby', params: { name: 'alice' } })
  const messages = useEventReducer(socket, 'message', (all, m) => [...all, m].slice(-100), [] as Message[])
  assertType<Equals<typeof messages, Message[]>>()
  const last = useLatestEvent(socket, 'message')
  assertType<Equals<typeof last, Message | undefined>>()
  // @ts-expect-error unknown event
  useLatestEvent(socket, 'nope')
  // @ts-expect-error the reducer's data is a Message
  useEventReducer(socket, 'message', (n: number, m: string) => n + m.length, 0)
  void socket?.call('send', { text: 'hi' })
  void status, authFailure
}
