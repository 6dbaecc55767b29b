import { hasRoutingInLocalPart, normalizeDomain, parseRecipient } from './address.js';
import { MxError, quoteInput } from './errors.js';
import { textLines } from './text-lines.js';

/** One change to the recipient lists: an address (or, with address '', a domain's whole list) present or gone. */
export interface RecipientChange {
  domain: string;
  address: string;
  present: boolean;
}

/** Lists move from `baseVersion` to `version`; a snapshot replaces every list. */
export interface RecipientDelta {
  version: number;
  baseVersion: number;
  snapshot: boolean;
  changes: RecipientChange[];
}

/** The longest address SMTP carries (RFC 5321 4.5.3.1: a 256-octet path minus the brackets). */
const MAX_ADDRESS = 254;

/** A listed address, normalised as RCPT lookups see it (lower case, ASCII domain); throws INVALID_ARGUMENT. */
export function listAddress(raw: string): { domain: string; address: string } {
  const text = raw.trim();
  if (!text) throw new MxError('INVALID_ARGUMENT', 'empty address');
  if (text.length > MAX_ADDRESS) throw new MxError('INVALID_ARGUMENT', `address longer than ${MAX_ADDRESS} characters`);
  if (/[\s\x00-\x1f\x7f<>]/.test(text)) throw new MxError('INVALID_ARGUMENT', `${quoteInput(text)} is not an address (spaces, control characters or <>)`);
  const parsed = parseRecipient(text);
  if (!parsed.ok) throw new MxError('INVALID_ARGUMENT', `${quoteInput(text)}: ${parsed.reason}`);
  if (hasRoutingInLocalPart(parsed.value.local)) throw new MxError('INVALID_ARGUMENT', `${quoteInput(text)}: a local part with %, ! or @ is never accepted at RCPT`);
  return { domain: parsed.value.domain, address: parsed.value.address };
}

/** A domain a list belongs to, normalised; throws INVALID_ARGUMENT. */
export function listDomain(raw: string): string {
  const d = normalizeDomain(raw.trim());
  if (!d) throw new MxError('INVALID_ARGUMENT', `${quoteInput(raw)} is not a domain`);
  return d;
}

/**
 * The addresses of a list file (for `domain`, or of any domain without it): one per line, `#` starts a comment,
 * blank lines are skipped. Any bad line (not text, too long, not an address, another domain) fails the whole file
 * with its line number.
 */
export function parseListFile(data: Buffer, domain?: string): string[] {
  const d = domain === undefined ? undefined : listDomain(domain);
  return textLines(data).map(({ n, text: line }) => {
    const fail = (why: string) => new MxError('INVALID_ARGUMENT', `line ${n}: ${why}`);
    if (line.length > MAX_ADDRESS) throw fail(`longer than ${MAX_ADDRESS} characters`);
    let a: { domain: string; address: string };
    try {
      a = listAddress(line);
    } catch (err) {
      throw fail((err as Error).message);
    }
    if (d !== undefined && a.domain !== d) throw fail(`${quoteInput(line)} is not in ${d}`);
    return a.address;
  });
}

/** An address of `domain` for a list, normalised; throws INVALID_ARGUMENT for another domain. */
export function listAddressIn(raw: string, domain: string): string {
  const a = listAddress(raw);
  if (a.domain !== domain) throw new MxError('INVALID_ARGUMENT', `${quoteInput(raw)} is not in ${domain}`);
  return a.address;
}

/** A list edit, normalised, with what the audit says of it; throws INVALID_ARGUMENT when it changes nothing. */
export function parseListEdit(req: { add: readonly string[]; remove: readonly string[]; dropDomains: readonly string[] }): {
  add: { domain: string; address: string }[];
  remove: { domain: string; address: string }[];
  drop: string[];
  /** e.g. "add 2, remove 1". */
  what: string;
  /** The domains it touches, for the audit's subject. */
  subject: string;
} {
  const add = req.add.map((raw) => listAddress(raw));
  const remove = req.remove.map((raw) => listAddress(raw));
  const drop = req.dropDomains.map(listDomain);
  const what = [add.length && `add ${add.length}`, remove.length && `remove ${remove.length}`, drop.length && `drop ${drop.join(' ')}`].filter(Boolean).join(', ');
  if (!what) throw new MxError('INVALID_ARGUMENT', 'nothing to change: give addresses to add or remove, or domains to drop');
  const subject = [...new Set([...add, ...remove].map((a) => a.domain).concat(drop))].join(' ');
  return { add, remove, drop, what, subject };
}
