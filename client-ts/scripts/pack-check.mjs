// Checks the package as a user gets it: `npm pack`s the built package,
// installs the tarball into a scratch project under the OS temp directory
// (offline, no scripts), and checks that
//   - every "exports" target and every source map's sources are in the tarball;
//   - ESM `import` and CommonJS `require` load ".", "./yjs" and "./react" and work;
//   - TypeScript type-checks code using them with moduleResolution node16
//     (an .mts file: the `import` condition; a .cts file: `require`), bundler
//     and the old node10 (through "types"/"typesVersions").
// The optional peers (yjs, y-protocols, lib0, react, @types/react) are linked
// from this package's own node_modules, so no network is needed.
//
// Run after `npm run build`: `node scripts/pack-check.mjs` (or `npm run pack-check`;
// `npm test` runs it last). KEEP_PACK_CHECK=1 keeps the scratch directory.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, posix, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'))
const tsc = join(pkgDir, 'node_modules/typescript/bin/tsc')
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
const subpaths = ['.', './yjs', './react']
const started = Date.now()

let failures = 0
function check(ok, what) {
  if (ok) console.log(`  ok   ${what}`)
  else {
    failures++
    console.log(`  FAIL ${what}`)
  }
}
function run(cmd, args, cwd, what) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, npm_config_update_notifier: 'false' } })
  const ok = r.status === 0
  check(ok, what)
  if (!ok) {
    let out = `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ?? ''}`
    // tsc with --traceResolution: show just the diagnostics.
    if (/error TS\d+/.test(out)) out = out.split('\n').filter((l) => /error TS\d+|^\s{2,}\S/.test(l) && !/^(=|Resolv|File|Found|Loading|Search|Entering|Matched|Using|Directory|'package)/.test(l.trim())).join('\n')
    console.log(out.replace(/^/gm, '       '))
  }
  return r
}

if (!existsSync(join(pkgDir, 'dist/index.js')) || !existsSync(join(pkgDir, 'dist/cjs/index.js'))) {
  console.error('pack-check: dist/ is missing or incomplete: run `npm run build` first')
  process.exit(1)
}

const work = mkdtempSync(join(tmpdir(), 'roost-pack-check-'))
try {
  console.log(`pack-check: ${pkg.name}@${pkg.version} in ${work}`)

  // --- the tarball -----------------------------------------------------------
  const packed = JSON.parse(
    execFileSync(npm, ['pack', '--json', '--ignore-scripts', '--pack-destination', work], {
      cwd: pkgDir,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    }),
  )[0]
  const tarball = join(work, packed.filename)
  const files = new Set(packed.files.map((f) => f.path))
  check(pkg.private !== true, 'package.json is not "private"')
  check(files.has('package.json') && files.has('README.md') && files.has('API.md'), 'package.json, README.md and API.md are packed')
  check(![...files].some((f) => f.startsWith('test/') || f.startsWith('node_modules/')), 'no tests or node_modules are packed')

  const targets = []
  const walk = (v) => (typeof v === 'string' ? targets.push(v) : Object.values(v).forEach(walk))
  walk(pkg.exports)
  const missingTargets = targets.map((t) => posix.normalize(t)).filter((t) => !files.has(t))
  check(missingTargets.length === 0, `every "exports" target is packed${missingTargets.length ? `: missing ${missingTargets.join(', ')}` : ''}`)
  for (const sub of subpaths) {
    const e = pkg.exports[sub]
    check(e?.import?.types && e?.import?.default && e?.require?.types && e?.require?.default, `"exports" ${sub} has import/require with types`)
  }
  check(files.has('dist/cjs/package.json') && JSON.parse(readFileSync(join(pkgDir, 'dist/cjs/package.json'), 'utf8')).type === 'commonjs', 'dist/cjs is marked {"type":"commonjs"}')

  const maps = [...files].filter((f) => f.endsWith('.map'))
  const badSources = []
  for (const map of maps) {
    const { sources } = JSON.parse(readFileSync(join(pkgDir, map), 'utf8'))
    for (const s of sources) {
      const target = posix.normalize(posix.join(posix.dirname(map), s))
      if (!files.has(target)) badSources.push(`${map} -> ${s}`)
    }
  }
  check(maps.length > 0 && badSources.length === 0, `the sources of all ${maps.length} source maps are packed${badSources.length ? `: ${badSources.slice(0, 5).join(', ')}` : ''}`)

  // --- a scratch project that installs it ---------------------------------------
  const app = join(work, 'app')
  mkdirSync(app)
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'roost-pack-check', version: '0.0.0', private: true }, null, 2))
  run(npm, ['install', '--no-audit', '--no-fund', '--offline', '--ignore-scripts', '--no-package-lock', tarball], app, 'npm install --offline <tarball>')
  const peers = ['yjs', 'y-protocols', 'lib0', 'react', '@types/react']
  for (const peer of peers) {
    const link = join(app, 'node_modules', peer)
    if (existsSync(link)) continue
    mkdirSync(dirname(link), { recursive: true })
    symlinkSync(join(pkgDir, 'node_modules', peer), link, 'junction')
  }
  check(existsSync(join(app, 'node_modules/@roost/client/dist/cjs/index.js')), 'the installed package has dist/cjs')

  // --- runtime: ESM and CommonJS ----------------------------------------------
  writeFileSync(
    join(app, 'esm.mjs'),
    `import * as core from '@roost/client'
import * as yjs from '@roost/client/yjs'
import * as react from '@roost/client/react'
import * as Y from 'yjs'
const need = (mod, names, what) => { for (const n of names) if (typeof mod[n] !== 'function') throw new Error(what + ' lacks ' + n) }
need(core, ['connect', 'ObjectSocket', 'createHttpClient', 'createClient', 'RoostError'], '@roost/client')
need(yjs, ['RoostProvider', 'decodeMessage', 'encodeSaved'], '@roost/client/yjs')
need(react, ['useObjectSocket', 'useRoostProvider', 'RoostClientProvider', 'useYText'], '@roost/client/react')
if (!(new core.RoostError('closed', 'x') instanceof Error)) throw new Error('RoostError is not an Error')
const p = new yjs.RoostProvider('d', new Y.Doc(), { url: 'http://127.0.0.1:9', connect: false })
if (p.status !== 'closed') throw new Error('provider status ' + p.status)
p.destroy()
console.log('esm ok')
`,
  )
  writeFileSync(
    join(app, 'cjs.cjs'),
    `const core = require('@roost/client')
const yjs = require('@roost/client/yjs')
const react = require('@roost/client/react')
const Y = require('yjs')
const need = (mod, names, what) => { for (const n of names) if (typeof mod[n] !== 'function') throw new Error(what + ' lacks ' + n) }
need(core, ['connect', 'ObjectSocket', 'createHttpClient', 'createClient', 'RoostError'], '@roost/client')
need(yjs, ['RoostProvider', 'decodeMessage', 'encodeSaved'], '@roost/client/yjs')
need(react, ['useObjectSocket', 'useRoostProvider', 'RoostClientProvider', 'useYText'], '@roost/client/react')
if (!require.resolve('@roost/client').includes(require('path').join('dist', 'cjs'))) throw new Error('require did not pick dist/cjs')
if (!(new core.RoostError('closed', 'x') instanceof Error)) throw new Error('RoostError is not an Error')
const p = new yjs.RoostProvider('d', new Y.Doc(), { url: 'http://127.0.0.1:9', connect: false })
if (p.status !== 'closed') throw new Error('provider status ' + p.status)
p.destroy()
console.log('cjs ok')
`,
  )
  run(process.execPath, ['esm.mjs'], app, 'ESM: import "@roost/client", "/yjs", "/react"')
  run(process.execPath, ['cjs.cjs'], app, 'CommonJS: require "@roost/client", "/yjs", "/react"')

  // --- types: node16 (ESM and CommonJS) and bundler ----------------------------
  const usage = (importLines) => `${importLines}

interface Counter {
  methods: { increment(args: { by: number }): number; get(): number }
  events: { changed: { value: number } }
}
export async function main(): Promise<number> {
  const client = createClient({ url: 'http://127.0.0.1:8787', token: async () => 'token' })
  const socket = client.connect<Counter>('counter', 'visits')
  socket.onAuthFailed((info) => console.log(info.code, info.reason))
  socket.on('changed', (e) => console.log(e.value.toFixed()))
  const n: number = await socket.call('increment', { by: 1 })
  const err: RoostError = new RoostError('closed', 'x')
  const doc = new Y.Doc()
  const provider = new RoostProvider('notes', doc, { url: 'http://127.0.0.1:8787', connect: false })
  const saved: boolean = provider.saved
  const el = createElement(RoostClientProvider, { client }, createElement(() => {
    const text: string = useYText(doc.getText('t'))
    return createElement('p', null, text)
  }))
  const hook: typeof useObjectSocket = useObjectSocket
  void el, hook, err, saved
  return n
}
`
  const imports = (yjsLine) => `import { createClient, RoostError } from '@roost/client'
import { RoostProvider } from '@roost/client/yjs'
import { RoostClientProvider, useObjectSocket, useYText } from '@roost/client/react'
import { createElement } from 'react'
${yjsLine}`
  const esmImports = imports(`import * as Y from 'yjs'`)
  // yjs ships ESM-only declarations, so a CommonJS file cannot import it
  // (TS1479) — the user's problem as much as ours; a type import avoids it.
  const cjsImports = imports(`declare const Y: typeof import('yjs', { with: { 'resolution-mode': 'import' } })`)
  writeFileSync(join(app, 'esm.mts'), usage(esmImports))
  writeFileSync(join(app, 'bundler.ts'), usage(esmImports))
  writeFileSync(join(app, 'cjs.cts'), usage(cjsImports))
  writeFileSync(
    join(app, 'cjs-core.cts'),
    `import { connect, createHttpClient, RoostError, type ObjectSocket } from '@roost/client'
interface Counter { methods: { increment(args: { by: number }): number } }
export async function main(): Promise<number> {
  const s: ObjectSocket<Counter> = connect<Counter>({ url: 'http://127.0.0.1:8787', class: 'counter', name: 'n' })
  const http = createHttpClient({ url: 'http://127.0.0.1:8787' })
  const m: number = await http.object<Counter>('counter', 'n').call('increment', { by: 2 })
  void new RoostError('closed', 'x')
  return m + (await s.call('increment', { by: 1 }))
}
`,
  )
  const common = { strict: true, noEmit: true, target: 'ES2022', lib: ['ES2022', 'DOM'], types: [], skipLibCheck: false }
  const tsconfig = (name, compilerOptions, files) =>
    writeFileSync(join(app, name), JSON.stringify({ compilerOptions: { ...common, ...compilerOptions }, files }, null, 2))
  tsconfig('tsconfig.node16.json', { module: 'node16', moduleResolution: 'node16' }, ['esm.mts', 'cjs-core.cts'])
  // The CommonJS declarations of the yjs and react entries import yjs, whose
  // ESM-only declarations a CommonJS file may not import: checking them needs
  // skipLibCheck (as does any CommonJS project that uses yjs).
  tsconfig('tsconfig.node16-cjs.json', { module: 'node16', moduleResolution: 'node16', skipLibCheck: true }, ['cjs.cts'])
  tsconfig('tsconfig.bundler.json', { module: 'esnext', moduleResolution: 'bundler' }, ['bundler.ts'])
  const traced = run(
    process.execPath,
    [tsc, '-p', 'tsconfig.node16.json', '--traceResolution'],
    app,
    'tsc, moduleResolution node16: an .mts file (import) and a .cts file (require) using "@roost/client"',
  )
  if (traced.status === 0) {
    // The .cts file must get the CommonJS declarations, the .mts file the ESM ones.
    const out = traced.stdout
    check(/dist\/cjs\/index\.d\.ts/.test(out) && /dist\/index\.d\.ts/.test(out), 'tsc node16 resolved both dist/index.d.ts (import) and dist/cjs/index.d.ts (require)')
  }
  run(process.execPath, [tsc, '-p', 'tsconfig.node16-cjs.json'], app, 'tsc, moduleResolution node16: a .cts file using all three entry points (skipLibCheck)')
  run(process.execPath, [tsc, '-p', 'tsconfig.bundler.json'], app, 'tsc: moduleResolution bundler')
  // Old-style resolution ignores "exports": "types" and "typesVersions" serve it.
  tsconfig('tsconfig.node10.json', { module: 'commonjs', moduleResolution: 'node10', esModuleInterop: true, skipLibCheck: true }, ['node10.ts'])
  writeFileSync(join(app, 'node10.ts'), usage(esmImports))
  run(process.execPath, [tsc, '-p', 'tsconfig.node10.json'], app, 'tsc: moduleResolution node10 (typesVersions; skipLibCheck)')
} finally {
  if (process.env.KEEP_PACK_CHECK) console.log(`kept ${work}`)
  else rmSync(work, { recursive: true, force: true })
}

console.log(`pack-check: ${failures === 0 ? 'passed' : `${failures} check(s) failed`} in ${((Date.now() - started) / 1000).toFixed(1)} s`)
process.exit(failures === 0 ? 0 : 1)
