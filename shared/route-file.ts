import { MxError, errorMessage, quoteInput } from './errors.js';
import { normalizeRoutes, type Route } from './routes.js';
import { textLines } from './text-lines.js';

const SYNTAX = 'a line is "MATCH TARGET [hold] [tls=required] [verify=probe]"';

/** The options a line may carry after its target (beyond Postfix's transport syntax: what `route set` takes). */
function option(route: Route, word: string): string | undefined {
  const [key, value] = word.split('=', 2) as [string, string | undefined];
  if (word === 'hold') route.hold = true;
  else if (key === 'tls' && (value === 'required' || value === 'may')) route.tls = value;
  else if (key === 'verify' && (value === 'probe' || value === 'none')) route.verify = value;
  else return `unknown option ${quoteInput(word)} (hold, tls=required|may, verify=probe|none)`;
  return undefined;
}

/**
 * The routes of a transport-map FILE (Postfix's `transport_maps` syntax, as `route import` reads it): one `MATCH
 * TARGET` per line, `#` comments, blank lines skipped; after the target optionally `hold`, `tls=required` and
 * `verify=probe`. Each route is checked as `route set` checks it, and a match on two lines is an error: any bad
 * line fails the whole file with its line number (INVALID_ARGUMENT), so nothing of a broken file is applied.
 */
export function parseRouteFile(data: Buffer): Route[] {
  const seen = new Map<string, number>();
  return textLines(data).map(({ n, text }) => {
    const fail = (why: string) => new MxError('INVALID_ARGUMENT', `line ${n}: ${why}`);
    const [match, target, ...options] = text.split(/\s+/);
    if (!target) throw fail(`${quoteInput(match!)} has no TARGET; ${SYNTAX}`);
    const route: Route = { match: match!, target };
    for (const word of options) {
      const bad = option(route, word);
      if (bad) throw fail(bad);
    }
    let normalized: Route;
    try {
      normalized = normalizeRoutes([route])[0]!;
    } catch (err) {
      throw fail(errorMessage(err));
    }
    const first = seen.get(normalized.match);
    if (first !== undefined) throw fail(`${quoteInput(match!)} is on line ${first} too`);
    seen.set(normalized.match, n);
    return normalized;
  });
}
