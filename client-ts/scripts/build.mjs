// Builds the package twice from src/: ESM to dist/ (with the package's
// "type": "module") and CommonJS to dist/cjs/, which gets its own
// {"type":"commonjs"} package.json so that Node and TypeScript read the .js
// and .d.ts files there as CommonJS. package.json "exports" points `import`
// at the first and `require` at the second, each with its own declarations.
// Source maps point at ../src (resp. ../../src), which the tarball ships.
import { spawnSync } from 'node:child_process'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const pkgDir = join(dirname(fileURLToPath(import.meta.url)), '..')
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')

rmSync(join(pkgDir, 'dist'), { recursive: true, force: true })
for (const config of ['tsconfig.json', 'tsconfig.cjs.json']) {
  const r = spawnSync(process.execPath, [tsc, '-p', join(pkgDir, config)], { cwd: pkgDir, stdio: 'inherit' })
  if (r.status !== 0) process.exit(r.status ?? 1)
}
mkdirSync(join(pkgDir, 'dist/cjs'), { recursive: true })
writeFileSync(join(pkgDir, 'dist/cjs/package.json'), '{\n  "type": "commonjs"\n}\n')
