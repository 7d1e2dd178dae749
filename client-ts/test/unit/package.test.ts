// The package's shape: the core entry imports nothing outside the package
// (no yjs, y-protocols, lib0 or react), the built entry points resolve through
// package.json "exports", and every export has TSDoc.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const pkgDir = resolve(fileURLToPath(new URL('../..', import.meta.url)))

/** Bare (package) imports reachable from `entry` through relative imports. */
function bareImports(entry: string): Set<string> {
  const seen = new Set<string>()
  const bare = new Set<string>()
  const stack = [entry]
  while (stack.length > 0) {
    const file = stack.pop()!
    if (seen.has(file)) continue
    seen.add(file)
    const text = readFileSync(file, 'utf8')
    for (const m of text.matchAll(/^\s*(?:import|export)\s+(type\s+)?[^'"]*?from\s+['"]([^'"]+)['"]/gm)) {
      if (m[1]) continue // type-only: erased
      const spec = m[2]!
      if (spec.startsWith('.')) stack.push(join(dirname(file), spec.replace(/\.js$/, '.ts')))
      else bare.add(spec)
    }
  }
  return bare
}

describe('package shape', () => {
  it('the core entry point has no runtime dependencies', () => {
    expect([...bareImports(join(pkgDir, 'src/index.ts'))]).toEqual([])
  })

  it('the yjs entry point needs only yjs, y-protocols and lib0', () => {
    const deps = [...bareImports(join(pkgDir, 'src/yjs/index.ts'))].map((d) => d.split('/')[0])
    expect(new Set(deps)).toEqual(new Set(['yjs', 'y-protocols', 'lib0']))
  })

  it('package.json has no runtime dependencies and optional peers', () => {
    const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'))
    expect(pkg.dependencies ?? {}).toEqual({})
    expect(Object.keys(pkg.peerDependencies).sort()).toEqual(['lib0', 'react', 'y-protocols', 'yjs'])
  })

  it('the built entry points resolve through "exports"', () => {
    if (!existsSync(join(pkgDir, 'dist/index.js'))) throw new Error('run `npm run build` first (npm test does)')
    const out = execFileSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const core = await import('@roost/client'); const yjs = await import('@roost/client/yjs'); const react = await import('@roost/client/react');
         console.log(JSON.stringify([Object.keys(core).sort(), Object.keys(yjs).sort(), Object.keys(react).sort()]))`,
      ],
      { cwd: pkgDir, encoding: 'utf8' },
    )
    const [core, yjs, react] = JSON.parse(out)
    expect(core).toEqual(expect.arrayContaining(['connect', 'ObjectSocket', 'createHttpClient', 'RoostError']))
    expect(yjs).toEqual(expect.arrayContaining(['RoostProvider', 'decodeMessage', 'encodeSaved']))
    expect(react).toEqual(expect.arrayContaining(['useObjectSocket', 'useRoostProvider', 'useYDoc', 'useAwareness', 'usePresence']))
    for (const f of ['dist/index.d.ts', 'dist/yjs/index.d.ts', 'dist/react/index.d.ts']) expect(existsSync(join(pkgDir, f))).toBe(true)
  })
})

describe('API reference', () => {
  it('API.md is generated from the current TSDoc and every export is documented', () => {
    const r = spawnSync(process.execPath, [join(pkgDir, 'scripts/api-doc.mjs'), '--check'], { cwd: pkgDir, encoding: 'utf8' })
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
  })
})
