import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** One file the dashboard serves: its bytes and content type; `public` ones are served without a token. */
export interface Asset {
  body: Buffer;
  type: string;
  public: boolean;
}

/** control/web/ (dist/control/web/ in a build: `npm run build` copies it). */
const WEB_DIR = fileURLToPath(new URL('../../web/', import.meta.url));

const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
};

function load(file: string, isPublic: boolean): Asset {
  const type = TYPES[file.slice(file.lastIndexOf('.') + 1)] ?? 'application/octet-stream';
  return { body: readFileSync(file), type, public: isPublic };
}

/**
 * The dashboard's files by URL path, read once at start (a few hundred KB): the page, its script and style, and
 * uPlot (charts) from its npm package, so nothing comes from a CDN or the internet. The login page and the style
 * are public; the rest, like the API, needs a token.
 */
export function loadAssets(): { files: ReadonlyMap<string, Asset>; loginPage: string } {
  const uplot = createRequire(import.meta.url).resolve('uplot');
  const uplotDir = uplot.slice(0, uplot.lastIndexOf('/') + 1);
  const files = new Map<string, Asset>([
    ['/', load(`${WEB_DIR}index.html`, false)],
    ['/app.js', load(`${WEB_DIR}app.js`, false)],
    ['/style.css', load(`${WEB_DIR}style.css`, true)],
    ['/vendor/uPlot.js', load(`${uplotDir}uPlot.iife.min.js`, false)],
    ['/vendor/uPlot.css', load(`${uplotDir}uPlot.min.css`, false)],
  ]);
  return { files, loginPage: readFileSync(`${WEB_DIR}login.html`, 'utf8') };
}
