import { domainToASCII } from 'node:url';
import { quoteInput } from './errors.js';

/** A recipient split into a local part and an ASCII (punycode), lower-case domain. */
export interface MailAddress {
  local: string;
  domain: string;
  /** local@domain with the domain normalised; the key routes match against. */
  address: string;
}

export type ParsedAddress = { ok: true; value: MailAddress } | { ok: false; reason: string };

// Postfix's allow_untrusted_routing = no: these characters in a local part ask the next hop to relay further.
const ROUTING_CHARS = /[%!@]/;
const DOMAIN_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/** Normalises a domain for matching: lower case, punycode, no trailing dot allowed. Returns undefined when invalid. */
export function normalizeDomain(domain: string): string | undefined {
  if (!domain || domain.endsWith('.') || domain.startsWith('[')) return undefined;
  const ascii = domainToASCII(domain.toLowerCase());
  if (!ascii || ascii.length > 253) return undefined;
  return ascii.split('.').every((label) => DOMAIN_LABEL.test(label)) && ascii.includes('.') ? ascii : undefined;
}

/**
 * Parses an envelope recipient as smtp-server hands it over (already unwrapped from <>).
 * Rejects forms that would make a next hop relay elsewhere: source routes, address literals,
 * %-hacks, bang paths and quoted local parts hiding another @, and unqualified or dotted-end domains.
 */
export function parseRecipient(raw: string): ParsedAddress {
  if (raw.startsWith('@')) return { ok: false, reason: 'source routes are not accepted' };
  const at = raw.lastIndexOf('@');
  if (at <= 0) return { ok: false, reason: 'recipient must be a fully qualified address' };
  const local = raw.slice(0, at);
  const domainPart = raw.slice(at + 1);
  if (domainPart.startsWith('[')) return { ok: false, reason: 'address literals are not accepted' };
  const domain = normalizeDomain(domainPart);
  if (!domain) return { ok: false, reason: `${quoteInput(domainPart)} is not a valid domain` };
  const address = `${local.toLowerCase()}@${domain}`;
  return { ok: true, value: { local, domain, address } };
}

/** True when the local part asks for further routing (user%host, host!user, "user@host"). */
export function hasRoutingInLocalPart(local: string): boolean {
  return ROUTING_CHARS.test(local);
}

/** The key a stored recipient is routed by: its normalised address, or the raw text lower-cased if unparsable. */
export function addressKey(raw: string): string {
  const parsed = parseRecipient(raw);
  return parsed.ok ? parsed.value.address : raw.toLowerCase();
}
