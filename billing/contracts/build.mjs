// Compiles each contract (escrow.tolk, registry.tolk) with the pinned @ton/tolk-js and
// writes, into the output directory (default: build/ next to this file; `node build.mjs
// --out DIR` for another), for each NAME:
//   NAME.boc        the code cell as a BoC (binary, no CRC, no index)
//   NAME.code-hash  hex of the code cell's representation hash, one line
//   NAME.fif        the Fift assembler listing tolk-js produced (for reading, not used)
// The BoC is re-serialized with @ton/core so the bytes depend only on the cell.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runTolkCompiler, getTolkCompilerVersion } from '@ton/tolk-js';
import { Cell } from '@ton/core';

const here = dirname(fileURLToPath(import.meta.url));
const expectedTolk = '1.3.0';

function parseArgs(argv) {
  let out = join(here, 'build');
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out' && i + 1 < argv.length) out = resolve(argv[++i]);
    else throw new Error(`unknown argument ${argv[i]} (usage: node build.mjs [--out DIR])`);
  }
  return out;
}

const out = parseArgs(process.argv.slice(2));
const version = await getTolkCompilerVersion();
if (version !== expectedTolk) {
  throw new Error(`tolk-js reports compiler ${version}, expected ${expectedTolk}: run npm ci`);
}
async function compile(name) {
  const result = await runTolkCompiler({
    entrypointFileName: `${name}.tolk`,
    fsReadCallback: (path) => readFileSync(join(here, path), 'utf8'),
    optimizationLevel: 2,
    withStackComments: false,
    withSrcLineComments: false,
  });
  if (result.status !== 'ok') {
    console.error(result.message);
    process.exit(1);
  }
  const code = Cell.fromBase64(result.codeBoc64);
  const hash = code.hash().toString('hex');
  if (hash !== result.codeHashHex.toLowerCase().padStart(64, '0')) {
    throw new Error(`${name}: code hash mismatch: tolk-js says ${result.codeHashHex}, @ton/core ${hash}`);
  }
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, `${name}.boc`), code.toBoc({ idx: false, crc32: false }));
  writeFileSync(join(out, `${name}.code-hash`), hash + '\n');
  writeFileSync(join(out, `${name}.fif`), result.fiftCode);
  if (result.stderr) process.stderr.write(result.stderr);
  console.log(`${name}: tolk ${version}, ${code.bits.length} bits + ${code.refs.length} refs at the root, code hash ${hash} -> ${out}`);
}

for (const name of ['escrow', 'registry']) {
  await compile(name);
}
