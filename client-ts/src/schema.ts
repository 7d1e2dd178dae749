/**
 * Typed RPC: declare an object's methods and pushed events once, as a
 * TypeScript type, and pass it as the type parameter of `connect`,
 * `RoostClient.connect` or `HttpClient.object`: `call` then checks method
 * names and arguments and returns the declared result type, and `on` checks
 * event names and types the listener's data. Types only: nothing is checked
 * at run time.
 *
 * ```ts
 * interface Counter {
 *   methods: {
 *     increment(args: { by: number }): number
 *     get(): number
 *   }
 *   events: { changed: { value: number } }
 * }
 * const counter = connect<Counter>({ url, class: 'counter', name: 'visits' })
 * const n = await counter.call('increment', { by: 1 }) // n: number
 * counter.on('changed', ({ value }) => console.log(value))
 * ```
 * @module
 */

import type { ErrorDetail } from './errors.js'

/**
 * The shape of an object's declaration: `methods` maps each method name to a
 * function type with at most one parameter (the call's JSON arguments; omit it
 * for a method without arguments, make it optional for optional arguments)
 * returning the result (or a promise of it); `events` maps each event name to
 * the type of its `data`. Either part may be left out: that part is then
 * untyped (any name, `unknown` data).
 */
export interface ObjectSchema {
  /** Method name → `(args) => result`. */
  methods?: object
  /** Event name → the event's `data`. */
  events?: object
}

/**
 * The schema of a socket or stub declared without one: any method name with
 * any arguments and an `unknown` result (or the type given as `call<T>`), any
 * event name with `unknown` data (or `on<T>`). The default type parameter.
 */
export interface UntypedObject {
  /** Any method. */
  methods: { [method: string]: (args?: any) => unknown }
  /** Any event. */
  events: { [event: string]: unknown }
}

/** Events every object socket may receive whatever the object: the answer to an in-band token refresh, and errors about frames. */
export interface BuiltinEvents {
  /** An in-band token refresh was accepted; `exp` is the new expiry in ms since the epoch. */
  auth: { exp: number }
  /** The server could not handle a frame (e.g. a malformed `call` envelope, a refused refresh). */
  error: ErrorDetail
}

/** The declared methods of `S` (the untyped ones when `S` declares none). */
export type MethodsOf<S> = S extends { methods: infer M } ? M : UntypedObject['methods']

/** The declared events of `S` plus the {@link BuiltinEvents} it does not redeclare. */
export type EventsOf<S> = (S extends { events: infer E } ? E : UntypedObject['events']) extends infer E
  ? Omit<BuiltinEvents, keyof E> & E
  : never

/** The method names of `S`. */
export type MethodName<S> = Extract<keyof MethodsOf<S>, string>

/** The event names of `S`. */
export type EventName<S> = Extract<keyof EventsOf<S>, string>

/** The result type of method `M` of `S` (a promise is unwrapped). */
export type MethodResult<S, M extends MethodName<S>> = MethodsOf<S>[M] extends (...args: any) => infer R ? Awaited<R> : unknown

/** The `data` type of event `E` of `S`. */
export type EventData<S, E extends EventName<S>> = EventsOf<S>[E]

/**
 * The arguments after the method name of a typed `call`: `(args, options?)`
 * when the method takes a required argument, `(args?, options?)` when it is
 * optional or absent.
 */
export type CallArgs<S, M extends MethodName<S>, Options> = MethodsOf<S>[M] extends (...args: infer P) => any
  ? P extends []
    ? [args?: undefined, options?: Options]
    : P extends [infer A]
      ? [args: A, options?: Options]
      : P extends [(infer A)?]
        ? [args?: A, options?: Options]
        : never
  : [args?: unknown, options?: Options]

/**
 * `string` when `S` is untyped in its methods (any name may be called, with a
 * result type given as `call<T>`), else `never` (only the declared names).
 */
export type UntypedMethodName<S> = string extends MethodName<S> ? string : never

/** `string` when `S` is untyped in its events, else `never`. */
export type UntypedEventName<S> = string extends keyof (S extends { events: infer E } ? E : UntypedObject['events'])
  ? string
  : never
