// Generates API.md from the TSDoc of every export of the three entry points,
// using the TypeScript compiler API. `node scripts/api-doc.mjs` writes API.md;
// `node scripts/api-doc.mjs --check` fails if API.md is stale or an export
// has no documentation (run by the unit tests).
import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

const pkgDir = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const entries = [
  ['@roost/client', 'src/index.ts'],
  ['@roost/client/yjs', 'src/yjs/index.ts'],
  ['@roost/client/react', 'src/react/index.ts'],
]

export function generate() {
  const config = ts.getParsedCommandLineOfConfigFile(join(pkgDir, 'tsconfig.json'), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => {} })
  const program = ts.createProgram(entries.map(([, f]) => join(pkgDir, f)), config.options)
  const checker = program.getTypeChecker()
  const missing = []
  const out = [
    '# `@roost/client` API reference',
    '',
    'Generated from the TSDoc comments by `node scripts/api-doc.mjs` (checked by `npm test`). See README.md for a walkthrough.',
    '',
  ]
  const doc = (sym) => ts.displayPartsToString(sym.getDocumentationComment(checker)).trim()
  const flags = ts.TypeFormatFlags.NoTruncation | ts.TypeFormatFlags.UseAliasDefinedOutsideCurrentScope

  for (const [name, file] of entries) {
    const sf = program.getSourceFile(join(pkgDir, file))
    const moduleSym = checker.getSymbolAtLocation(sf)
    out.push(`## \`${name}\``, '')
    const exports = checker.getExportsOfModule(moduleSym).sort((a, b) => a.name.localeCompare(b.name))
    for (const exp of exports) {
      const sym = exp.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exp) : exp
      const decl = sym.declarations?.[0]
      if (!decl) continue
      const text = doc(sym)
      if (!text) missing.push(`${name}: ${exp.name}`)
      let kind = 'const'
      let signature = ''
      if (ts.isClassDeclaration(decl)) kind = 'class'
      else if (ts.isInterfaceDeclaration(decl)) kind = 'interface'
      else if (ts.isTypeAliasDeclaration(decl)) {
        kind = 'type'
        signature = `type ${exp.name} = ${decl.type.getText().replace(/\s*\/\*\*[\s\S]*?\*\/\s*/g, ' ').replace(/\s+/g, ' ').trim()}`
      } else if (ts.isFunctionDeclaration(decl)) {
        kind = 'function'
        // Every overload (the implementation's signature is not among them).
        const sigs = checker.getSignaturesOfType(checker.getTypeOfSymbolAtLocation(sym, decl), ts.SignatureKind.Call)
        signature = sigs.map((sig) => `function ${exp.name}${checker.signatureToString(sig, undefined, flags)}`).join('\n')
      } else if (ts.isVariableDeclaration(decl)) {
        signature = `const ${exp.name}: ${checker.typeToString(checker.getTypeOfSymbolAtLocation(sym, decl), undefined, flags)}`
      }
      out.push(`### ${kind} \`${exp.name}\``, '')
      if (signature) out.push('```ts', signature, '```', '')
      if (text) out.push(text, '')
      if (kind === 'class' || kind === 'interface') {
        const rows = []
        const members = checker.getPropertiesOfType(checker.getDeclaredTypeOfSymbol(sym))
        for (const m of members) {
          const md = m.declarations?.[0]
          if (!md) continue
          const mods = ts.canHaveModifiers(md) ? ts.getModifiers(md) ?? [] : []
          if (mods.some((x) => x.kind === ts.SyntaxKind.PrivateKeyword || x.kind === ts.SyntaxKind.ProtectedKeyword)) continue
          if (m.name.startsWith('_')) continue
          const mdoc = doc(m)
          let sigText
          if (ts.isMethodDeclaration(md) || ts.isMethodSignature(md)) {
            // Overloads are listed one after the other.
            const sigs = checker.getSignaturesOfType(checker.getTypeOfSymbolAtLocation(m, md), ts.SignatureKind.Call)
            sigText = sigs.map((s) => `${m.name}${checker.signatureToString(s, undefined, flags)}`).join('` / `')
          } else if (ts.isGetAccessorDeclaration(md)) {
            sigText = `get ${m.name}(): ${checker.typeToString(checker.getTypeOfSymbolAtLocation(m, md), undefined, flags)}`
          } else {
            const optional = m.flags & ts.SymbolFlags.Optional ? '?' : ''
            const ro = mods.some((x) => x.kind === ts.SyntaxKind.ReadonlyKeyword) ? 'readonly ' : ''
            const t = md.type ? md.type.getText().replace(/\s+/g, ' ') : checker.typeToString(checker.getTypeOfSymbolAtLocation(m, md), undefined, flags)
            sigText = `${ro}${m.name}${optional}: ${t}`
          }
          // Members inherited from another of our interfaces are documented there.
          const owner = md.parent
          const ownerName = owner && (ts.isClassDeclaration(owner) || ts.isInterfaceDeclaration(owner)) ? owner.name?.text : undefined
          if (ownerName && ownerName !== exp.name) {
            rows.push(`- \`${sigText}\` — from \`${ownerName}\``)
            continue
          }
          if (!mdoc && !(ts.isPropertySignature(md) && ['class', 'name', 'code', 'message', 'clientId', 'state', 'status'].includes(m.name))) {
            missing.push(`${name}: ${exp.name}.${m.name}`)
          }
          rows.push(`- \`${sigText}\`${mdoc ? ` — ${mdoc.replace(/\n+/g, ' ')}` : ''}`)
        }
        if (rows.length) out.push(...rows, '')
      }
    }
  }
  return { markdown: out.join('\n').replace(/\n{3,}/g, '\n\n'), missing }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { markdown, missing } = generate()
  const target = join(pkgDir, 'API.md')
  if (process.argv.includes('--check')) {
    let ok = true
    if (missing.length) {
      console.error(`exports without TSDoc:\n  ${missing.join('\n  ')}`)
      ok = false
    }
    if (readFileSync(target, 'utf8') !== markdown) {
      console.error('API.md is stale: run `npm run api`')
      ok = false
    }
    process.exit(ok ? 0 : 1)
  }
  writeFileSync(target, markdown)
  if (missing.length) console.error(`exports without TSDoc:\n  ${missing.join('\n  ')}`)
}
