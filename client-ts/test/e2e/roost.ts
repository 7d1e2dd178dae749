// Starts the real `roost` binary for end-to-end tests: 127.0.0.1 only, a temp
// data dir, the port parsed from its "roost listening on" log line, and
// stopped by PID. Binary: $ROOST_BIN, else ../target/debug/roost.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const pkgDir = resolve(fileURLToPath(new URL('../..', import.meta.url)))
export const ROOST_BIN = process.env.ROOST_BIN ? resolve(process.env.ROOST_BIN) : resolve(pkgDir, '../target/debug/roost')

export class RoostServer {
  private child: ChildProcess | null = null
  private log = ''
  private args: string[] = []
  port = 0

  private constructor(readonly dataDir: string, private readonly ownsDir: boolean) {}

  /** Starts a server on a free port (or `port`) with a fresh temp data dir (or `dataDir`). */
  static async start(options: { port?: number; dataDir?: string; args?: string[] } = {}): Promise<RoostServer> {
    if (!existsSync(ROOST_BIN)) {
      throw new Error(`roost binary not found at ${ROOST_BIN}: run \`cargo build -p roost --bins\` or set ROOST_BIN`)
    }
    const dir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'roost-client-ts-'))
    const server = new RoostServer(dir, options.dataDir === undefined)
    server.args = options.args ?? []
    await server.spawn(options.port ?? 0, server.args)
    return server
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }

  get pid(): number | undefined {
    return this.child?.pid
  }

  get output(): string {
    return this.log
  }

  private async spawn(port: number, args: string[]): Promise<void> {
    // Restarting on the same port can briefly fail to bind; retry a bounded number of times.
    for (let attempt = 0; attempt < 20; attempt++) {
      try {
        await this.spawnOnce(port, args)
        return
      } catch (e) {
        if (attempt === 19 || port === 0) throw e
        await new Promise((r) => setTimeout(r, 250))
      }
    }
  }

  private spawnOnce(port: number, args: string[]): Promise<void> {
    return new Promise((resolvePromise, reject) => {
      const child = spawn(
        ROOST_BIN,
        ['serve', '--listen', `127.0.0.1:${port}`, '--data', this.dataDir, ...args],
        { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info' } },
      )
      this.child = child
      let buffered = ''
      let listening = false
      const timer = setTimeout(() => {
        child.kill('SIGKILL')
        reject(new Error(`roost did not report listening within 30 s:\n${buffered}`))
      }, 30_000)
      child.stderr!.setEncoding('utf8')
      child.stderr!.on('data', (chunk: string) => {
        buffered += chunk
        this.log = (this.log + chunk).slice(-20_000)
        const m = /roost listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(buffered)
        if (m && !listening) {
          listening = true
          this.port = Number(m[1])
          clearTimeout(timer)
          resolvePromise()
        }
      })
      child.once('exit', (code, signal) => {
        clearTimeout(timer)
        if (this.child === child) this.child = null
        reject(new Error(`roost exited (${code ?? signal}) before listening:\n${buffered}`))
      })
    })
  }

  /**
   * Freezes (SIGSTOP) or thaws (SIGCONT) the process: the kernel still accepts
   * connections and buffers bytes, but nothing answers. Thaw in a `finally`.
   */
  freeze(frozen: boolean): void {
    this.child?.kill(frozen ? 'SIGSTOP' : 'SIGCONT')
  }

  /** Stops the process: SIGTERM (graceful) or SIGKILL (crash). Waits for it to exit. */
  async stop(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
    const child = this.child
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      this.child = null
      return
    }
    const exited = new Promise<void>((r) => child.once('exit', () => r()))
    // A frozen process would hold a SIGTERM until thawed.
    child.kill('SIGCONT')
    child.kill(signal)
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(timer)
    this.child = null
  }

  /** Stops the server and starts it again on the same port and data dir. */
  async restart(signal: 'SIGTERM' | 'SIGKILL' = 'SIGKILL'): Promise<void> {
    const port = this.port
    await this.stop(signal)
    await this.spawn(port, this.args)
  }

  /** Starts it again (after `stop()`) on the same port and data dir. */
  async startAgain(): Promise<void> {
    await this.spawn(this.port, this.args)
  }

  /** Stops the process and removes the temp data dir it created. */
  async dispose(): Promise<void> {
    await this.stop('SIGKILL')
    if (this.ownsDir) rmSync(this.dataDir, { recursive: true, force: true })
  }
}

/** Mints an access token with `roost token` (the server must run with the same secret). */
export function mintToken(secret: string, obj: string | string[], options: { perm?: 'read' | 'write'; ttl?: string } = {}): string {
  const objs = (Array.isArray(obj) ? obj : [obj]).flatMap((o) => ['--obj', o])
  return execFileSync(ROOST_BIN, ['token', ...objs, '--perm', options.perm ?? 'write', '--ttl', options.ttl ?? '1h', '--secret', secret], {
    encoding: 'utf8',
    timeout: 10_000,
  }).trim()
}
