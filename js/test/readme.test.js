'use strict';
// js/README.md: every ```js block is valid JavaScript (parsed, not run: they need a page),
// and every option its table documents is one tidings.js reads.
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');

const readme = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');
const source = fs.readFileSync(path.join(__dirname, '../../src/tidings/static/tidings.js'), 'utf8');

test('the README js blocks parse', () => {
  const blocks = [...readme.matchAll(/^```js\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
  assert.ok(blocks.length >= 4, `${blocks.length} js blocks`);
  for (const code of blocks) {
    // Inside an async function, as a module's top level would allow `await`.
    assert.doesNotThrow(() => new vm.Script(`(async () => {\n${code}\n})`), code);
  }
});

test('the README documents the options tidings.js reads, and only those', () => {
  const table = readme.split('## Options')[1].split('\n## ')[0];
  const documented = [...table.matchAll(/^\| `(\w+)/gm)].map((m) => m[1]).sort();
  const read = [...new Set([...source.matchAll(/opts\.(\w+)/g)].map((m) => m[1]))].sort();
  assert.deepEqual(documented, read);
});

// tidings.d.ts is checked with tsc by hand (TypeScript is not a dependency); this keeps its
// exports and liveCollection's options in step with the code.
test('tidings.d.ts declares what tidings.js exports, and the options it reads', () => {
  const types = fs.readFileSync(path.join(__dirname, '../../src/tidings/static/tidings.d.ts'), 'utf8');
  const declared = [...types.matchAll(/^export function (\w+)/gm)].map((m) => m[1]).sort();
  assert.deepEqual(declared, Object.keys(require('../../src/tidings/static/tidings.js')).sort());
  const block = types.split('interface LiveCollectionOptions')[1].split('\n}')[0];
  const options = [...block.matchAll(/^ {2}(\w+)\??[(:]/gm)].map((m) => m[1]).sort();
  const read = [...new Set([...source.matchAll(/opts\.(\w+)/g)].map((m) => m[1]))].sort();
  assert.deepEqual(options, read);
});
