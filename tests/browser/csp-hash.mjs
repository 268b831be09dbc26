// The dashboard's Content-Security-Policy allows its one inline script by
// hash. This computes that hash and checks it (default) or writes it into
// the page (--write). Run after editing the script in dashboard/index.html:
//
//   node tests/browser/csp-hash.mjs --write
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const PAGE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dashboard/index.html');

/** The page's inline script text and its CSP source expression. */
export function scriptHash(html) {
  const scripts = [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)];
  if (scripts.length !== 1) throw new Error(`expected exactly one inline <script>, found ${scripts.length}`);
  return `'sha256-${createHash('sha256').update(scripts[0][1], 'utf8').digest('base64')}'`;
}

/** The script-src source the page's CSP meta declares. */
export function declaredHash(html) {
  const m = /script-src ('sha256-[^']*')/.exec(html);
  return m ? m[1] : null;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const html = readFileSync(PAGE, 'utf8');
  const want = scriptHash(html), have = declaredHash(html);
  if (want === have) {
    console.log(`CSP hash up to date: ${want}`);
  } else if (process.argv.includes('--write')) {
    if (!have) throw new Error('no script-src sha256 source found in the CSP meta');
    writeFileSync(PAGE, html.replace(have, want));
    console.log(`CSP hash written: ${want}`);
  } else {
    console.error(`CSP hash out of date: page declares ${have}, script is ${want}\nrun: node tests/browser/csp-hash.mjs --write`);
    process.exit(1);
  }
}
