// Runs the real `roost` binary on a free loopback port with a temp data dir.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const here = path.dirname(fileURLToPath(import.meta.url))
export const ROOST_BIN = process.env.ROOST_BIN || path.join(here, '..', '..', 'target', 'debug', 'roost')

export function tempDir () {
  return mkdtempSync(path.join(tmpdir(), 'roost-node-'))
}

export function removeDir (dir) {
  rmSync(dir, { recursive: true, force: true })
}

/** Starts `roost serve`; resolves to { base, ws, proc, stop(), kill9() }. */
export function startServer (data, extra = [], listen = '127.0.0.1:0') {
  if (!existsSync(ROOST_BIN)) throw new Error(`${ROOST_BIN} missing: run cargo build --bins`)
  const proc = spawn(ROOST_BIN, ['serve', '--listen', listen, '--data', data, ...extra], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ROOST_LOG: 'info' }
  })
  return new Promise((resolve, reject) => {
    let buf = ''
    const timer = setTimeout(() => reject(new Error('roost did not start in 30 s')), 30000)
    proc.stderr.on('data', (chunk) => {
      buf += chunk.toString()
      if (process.env.ROOST_TEST_LOGS) process.stderr.write(chunk)
      const m = buf.match(/listening on (http:\/\/[0-9.:]+)/)
      if (m && timer) {
        clearTimeout(timer)
        const base = m[1]
        const exited = new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal })))
        resolve({
          base,
          port: Number(base.split(':').pop()),
          ws: base.replace('http://', 'ws://'),
          proc,
          async stop () { proc.kill('SIGTERM'); return exited },
          async kill9 () { proc.kill('SIGKILL'); return exited }
        })
      }
    })
    proc.once('exit', (code) => reject(new Error(`roost exited early with ${code}: ${buf}`)))
  })
}

/** Polls `check` until it returns true, or throws after `ms`. */
export async function until (check, ms = 10000, what = 'condition') {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (await check()) return
    await new Promise((r) => setTimeout(r, 20))
  }
  throw new Error(`timed out waiting for ${what}`)
}
