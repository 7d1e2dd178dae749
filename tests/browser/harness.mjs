// Helpers for the browser tests: the roost binary, Chromium, bounded waits.
import { execFileSync, spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

const here = dirname(fileURLToPath(import.meta.url))
export const ROOST_BIN = resolve(here, '../..', process.env.ROOST_BIN ?? 'target/debug/roost')
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium'
export const SCREENSHOTS = resolve(process.env.SCREENSHOT_DIR ?? join(here, 'screenshots'))
mkdirSync(SCREENSHOTS, { recursive: true })

/** A free TCP port on 127.0.0.1 (bound, then released). */
export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer()
    s.once('error', fail)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => ok(port))
    })
  })
}

/** Starts `roost serve` on 127.0.0.1:port with `data` (and `args`); resolves once it listens. */
export function startRoost({ port, data, args = [] }) {
  return new Promise((ok, fail) => {
    const proc = spawn(ROOST_BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--data', data, ...args], {
      env: { ...process.env, ROOST_LOG: 'info' },
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    let buf = ''
    const timer = setTimeout(() => {
      proc.kill('SIGKILL')
      fail(new Error(`roost did not start within 30 s:\n${buf}`))
    }, 30_000)
    proc.stderr.on('data', (chunk) => {
      if (process.env.ROOST_TEST_LOGS) process.stderr.write(chunk)
      if (buf.length < 100_000) buf += chunk
      if (buf.includes('listening on http://')) {
        clearTimeout(timer)
        ok({ proc, pid: proc.pid, url: `http://127.0.0.1:${port}` })
      }
    })
    proc.once('exit', (code) => {
      clearTimeout(timer)
      fail(new Error(`roost exited (${code}) before listening:\n${buf}`))
    })
  })
}

/** Kills a server started by startRoost (by its PID) and waits for it to exit. */
export function stopRoost(server, signal = 'SIGTERM') {
  return new Promise((ok) => {
    if (server.proc.exitCode !== null || server.proc.signalCode !== null) return ok()
    const timer = setTimeout(() => {
      try {
        process.kill(server.pid, 'SIGKILL')
      } catch {}
    }, 10_000)
    server.proc.once('exit', () => {
      clearTimeout(timer)
      ok()
    })
    process.kill(server.pid, signal)
  })
}

export function tempDir(prefix) {
  return mkdtempSync(join(tmpdir(), prefix))
}

/** The server the tests share: run.sh's (ROOST_URL), or one started here. */
export async function sharedServer() {
  if (process.env.ROOST_URL) return { url: process.env.ROOST_URL, owned: null }
  const server = await startRoost({ port: await freePort(), data: tempDir('roost-browser-') })
  return { url: server.url, owned: server }
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 60_000,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--disable-dev-shm-usage',
    ],
  })
}

/** A new page in its own context (its own storage: another user), failing on page errors. */
export async function newPage(browser, errors) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } })
  const page = await context.newPage()
  page.setDefaultTimeout(15_000)
  page.on('pageerror', (e) => errors.push(`${page.url()}: ${e.message}`))
  return page
}

export async function screenshot(page, name) {
  const path = join(SCREENSHOTS, `${name}.png`)
  await page.screenshot({ path, fullPage: true })
  return path
}

/** A name no other run used. */
export function unique(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`
}

/** POST /v1/objects/{class}/{name}/call/{method}. */
export async function rpc(url, cls, name, method, args = null) {
  const r = await fetch(`${url}/v1/objects/${cls}/${encodeURIComponent(name)}/call/${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(args),
    signal: AbortSignal.timeout(10_000),
  })
  return { status: r.status, body: await r.json() }
}

/** An access token from `roost token` for a server started with `--auth-secret secret`. */
export function mintToken(secret, obj, perm = 'write', sub = 'browser-test') {
  // With a holder (`sub`): the lobby seats only a token's holder.
  return execFileSync(ROOST_BIN, ['token', '--obj', obj, '--sub', sub, '--perm', perm, '--ttl', '1h', '--secret', secret], {
    encoding: 'utf8',
    timeout: 10_000,
  }).trim()
}
