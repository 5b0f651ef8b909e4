// Size of vxevents/client as shipped: client/index.mjs minified with terser, then gzip -9.
// Run: npm run size:client
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { minify } from 'terser';

const source = readFileSync(new URL('./index.mjs', import.meta.url), 'utf8');
const { code } = await minify(source, { module: true, compress: { passes: 2 } });
const gz = gzipSync(code, { level: 9 }).length;
console.log(`client/index.mjs: ${source.length} bytes, minified ${code.length} bytes, minified+gzip ${gz} bytes (${(gz / 1024).toFixed(1)} KiB)`);
