// Builds {{name}}.wasm from app.js with ComponentizeJS (pinned in
// package.json / package-lock.json, installed by build.sh).
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';

const { component } = await componentize({
  sourcePath: 'app.js',
  // Posta's plugin contract as is (package posta:plugin@0.1.0).
  witPath: 'wit',
  worldName: 'transport',
  // `fetch` needs `http`, timers need `clocks`, console.* needs `stdio`.
  // No Wasm code is downloaded or compiled ahead of time (no weval/AOT).
  disableFeatures: ['random', 'fetch-event'],
});
await writeFile('{{name}}.wasm', component);
console.log(`built ${process.cwd()}/{{name}}.wasm (${component.byteLength} bytes)`);
