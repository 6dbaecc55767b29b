import { readFileSync } from 'node:fs';
import { parseRecipient } from '../../shared/address.js';
import { checkChangeSelection, parseQueueState, type QueueSelection } from '../../shared/queue-selection.js';
import { errorMessage, MxError, UsageError } from '../../shared/errors.js';
import { parseListFile } from '../../shared/recipient-list.js';
import { formatTarget, normalizeMatch, parseTarget } from '../../shared/routes.js';
import { parseDuration } from '../../shared/units.js';

/** Local argument checks: a bad MATCH, TARGET or duration is exit 2 before anything is sent to the controller. */

/** `match "x" is not ...` -> `MATCH "x" is not ...`: the message names the argument as the user typed it. */
function relabel(message: string, word: string, label: string, text: string): string {
  const prefix = `${word} `;
  return message.startsWith(prefix) ? `${label} ${message.slice(prefix.length)}` : `${label} ${JSON.stringify(text)}: ${message}`;
}

/** The canonical MATCH key (address, domain or .parent-domain). */
export function checkMatch(text: string, label = 'MATCH'): string {
  try {
    return normalizeMatch(text).key;
  } catch (err) {
    throw new UsageError(relabel(errorMessage(err), 'match', label, text));
  }
}

/** The canonical TARGET (smtp:[host]:port or smtp:host:port). */
export function checkTarget(text: string, label = 'TARGET'): string {
  try {
    return formatTarget(parseTarget(text));
  } catch (err) {
    throw new UsageError(relabel(errorMessage(err), 'target', label, text));
  }
}

/** A positive duration in ms ("30s", "5m"); undefined when the flag was not given. */
export function checkDuration(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  let ms: number;
  try {
    ms = parseDuration(text);
  } catch {
    throw new UsageError(`${flag} ${text}: not a duration (use e.g. 500ms, 30s, 5m, 2h)`);
  }
  if (ms <= 0) throw new UsageError(`${flag} ${text}: must be more than 0`);
  return ms;
}

/** A route table version for compare-and-set; 0 / undefined = no check. */
export function checkVersion(flag: string, text: string | undefined): number {
  if (text === undefined) return 0;
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(Number(text))) throw new UsageError(`${flag} ${text}: expected a table version (a non-negative integer)`);
  return Number(text);
}

/** A whole number above 0; undefined when the flag was not given. */
export function checkPositiveInt(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n <= 0) throw new UsageError(`${flag} ${text}: expected a positive integer`);
  return n;
}

/** The recipient states `queue --state` selects. */
export { QUEUE_STATES } from '../../shared/queue-selection.js';

/** The selection flags of `queue ls|rm|retry|hold|release`, as commander gives them. */
export interface SelectionFlags {
  all?: boolean;
  match?: string;
  state?: string;
  sender?: string;
  olderThan?: string;
}

/** `--sender ADDR` ("<>" = the null sender, stored as ""). */
function checkSender(text: string): string {
  if (text.trim() === '<>') return '';
  const parsed = parseRecipient(text.trim());
  if (!parsed.ok) throw new UsageError(`--sender ${text}: not an address (use '<>' for the null sender)`);
  return parsed.value.address;
}

/** The queue selection of `queue ID` and the flags, checked alike on the local queue file and through the controller. */
export function checkSelection(opts: SelectionFlags, id?: string): QueueSelection {
  const olderThanMs = checkDuration('--older-than', opts.olderThan);
  let state: QueueSelection['state'];
  try {
    state = opts.state === undefined ? undefined : parseQueueState(opts.state, '--state');
  } catch (err) {
    throw new UsageError(errorMessage(err));
  }
  return {
    ...(id === undefined ? {} : { id }),
    ...(opts.all ? { all: true } : {}),
    ...(opts.match === undefined ? {} : { match: checkMatch(opts.match, '--match') }),
    ...(state ? { state } : {}),
    ...(opts.sender === undefined ? {} : { sender: checkSender(opts.sender) }),
    ...(olderThanMs === undefined ? {} : { olderThanMs }),
  };
}

/** The selection of a change (`queue rm|retry|hold|release`), refused before anything is opened or sent when it does not say which mail. */
export function checkChangeFlags(command: string, opts: SelectionFlags, id?: string): QueueSelection {
  const select = checkSelection(opts, id);
  checkChangeSelection(select, command);
  return select;
}

/** `queue ls --limit`. */
export function checkLimit(opts: { limit?: string }): { limit?: number } {
  const limit = checkPositiveInt('--limit', opts.limit);
  return limit ? { limit } : {};
}

const AGENT_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/;

export function checkAgentId(text: string, label = 'agent ID'): string {
  const id = text.trim();
  if (!AGENT_ID.test(id)) throw new UsageError(`${label} ${JSON.stringify(text)}: not an agent id`);
  return id;
}

/** Commander collector for a repeatable `--exclude ID` that also takes comma-separated lists (checked by checkExclude). */
export function collectIds(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), ...value.split(',').map((s) => s.trim())];
}

export function checkExclude(ids: readonly string[] | undefined): string[] {
  return [...new Set((ids ?? []).map((id) => checkAgentId(id, '--exclude')))];
}

/** The bytes of an input FILE (`-`: standard input); a file that cannot be read is a usage error naming it. */
export function readInputFile(file: string): Buffer {
  try {
    return readFileSync(file === '-' ? 0 : file);
  } catch (err) {
    throw new UsageError(`FILE ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : errorMessage(err)}`);
  }
}

/** Parses an input FILE with `parse`; a bad line is a usage error naming the file and the line, `nothing` ends it. */
export function parseInputFile<T>(file: string, parse: (data: Buffer) => T, nothing: string): T {
  const data = readInputFile(file);
  try {
    return parse(data);
  } catch (err) {
    throw new UsageError(`${file === '-' ? 'stdin' : file}: ${err instanceof MxError ? err.message : errorMessage(err)}; ${nothing}`);
  }
}

/** The addresses of a list FILE (one per line, # comments), all in `domain` when given; `nothing` ends an error. */
export function readAddressFile(file: string, domain: string | undefined, nothing: string): string[] {
  return parseInputFile(file, (data) => parseListFile(data, domain), nothing);
}
