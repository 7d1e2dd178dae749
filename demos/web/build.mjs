// Bundles the demo pages into dist/ (committed: the roost binary embeds it,
// so `cargo build` needs no npm). Run `npm ci && npm run build` after editing src/.
//
// `@roost/client` is taken from this repository's client-ts/src (esbuild reads
// its TypeScript directly), and every Yjs package resolves to this folder's
// node_modules, so the bundle holds exactly one copy of yjs.
import { build } from 'esbuild'
import { copyFileSync, mkdirSync, readdirSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const clientSrc = join(here, '../../client-ts/src')
// DEMOS_OUT: build elsewhere (tests/browser/run.sh checks that dist/ is up to date).
const dist = process.env.DEMOS_OUT ?? join(here, 'dist')

const localDeps = {
  name: 'local-deps',
  setup(b) {
    b.onResolve({ filter: /^@roost\/client(\/yjs)?$/ }, (args) => ({
      path: join(clientSrc, args.path.endsWith('/yjs') ? 'yjs/index.ts' : 'index.ts'),
    }))
    // One copy of each Yjs package, whoever imports it (client-ts has its own node_modules).
    b.onResolve({ filter: /^(yjs|y-protocols|lib0)(\/.*)?$/ }, async (args) => {
      if (args.pluginData === 'local') return undefined
      const r = await b.resolve(args.path, { resolveDir: here, kind: args.kind, pluginData: 'local' })
      return r.errors.length ? { errors: r.errors } : { path: r.path }
    })
  },
}

rmSync(dist, { recursive: true, force: true })
mkdirSync(dist, { recursive: true })
await build({
  entryPoints: ['editor', 'lobby', 'chat'].map((n) => join(here, 'src', `${n}.ts`)),
  outdir: dist,
  bundle: true,
  format: 'esm',
  target: 'es2020',
  minify: true,
  legalComments: 'none',
  logLevel: 'warning',
  plugins: [localDeps],
})
for (const f of readdirSync(join(here, 'src'))) {
  if (f.endsWith('.html') || f.endsWith('.css') || f.endsWith('.svg')) {
    copyFileSync(join(here, 'src', f), join(dist, f))
  }
}
console.log(`built ${readdirSync(dist).sort().join(', ')}`)
