// SPDX-License-Identifier: MIT
// A Node.js workload for the preload test: strings, JSON, regular expressions, Maps, typed arrays,
// Buffers, sorting and promises. The output never depends on time or hash order, so the run under
// LD_PRELOAD=libpyalloc.so must print what the run on glibc prints.
'use strict';
const crypto = require('crypto');
const zlib = require('zlib');
let seed = 42;
const rnd = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return Math.floor(seed / 65536); };
const count = new Map();
for (let i = 0; i < 100000; i++) {
  let w = '';
  for (let j = 0; j < 1 + rnd() % 5; j++) w += String.fromCharCode(97 + rnd() % 8);
  count.set(w, (count.get(w) || 0) + 1);
}
const keys = [...count.keys()].sort();
console.log('distinct', keys.length, 'first', keys[0], 'last', keys[keys.length - 1]);
const obj = {};
for (const k of keys.slice(0, 3000)) obj[k] = { n: count.get(k), r: k.split('').reverse().join('') };
const json = JSON.stringify(obj);
console.log('json', json.length, 'sha1', crypto.createHash('sha1').update(json).digest('hex'));
const matches = keys.join(' ').match(/\b[a-c]{3,}\b/g) || [];
console.log('regex', matches.length, matches.slice(0, 3).join(','));
const buf = Buffer.from(json);
const z = zlib.deflateSync(buf, { level: 9 });
console.log('deflate', z.length, 'round trip', zlib.inflateSync(z).equals(buf));
const f = new Float64Array(200000);
for (let i = 0; i < f.length; i++) f[i] = (rnd() % 10000) / 7;
f.sort();
console.log('typed', f[0].toFixed(3), f[f.length - 1].toFixed(3));
Promise.all(keys.slice(0, 500).map(async (k) => k.toUpperCase())).then((u) => console.log('promises', u.length, u[499]));
