/**
 * `log.format: pretty`: one pino JSON record as one line a person reads at a glance, e.g.
 *   2026-12-03T14:05:00.123Z INFO  agent mx-eu-1: queued queueId=Q1 client=192.0.2.7 from=a@b.example size=1234
 * (time, level name, process name and agent, the message, then every other field as key=value). Written here
 * rather than taken from pino-pretty, which is not a dependency: ~60 lines do what the agent and controller need.
 */

/** Fields shown in the line's prefix, or not at all. */
const PREFIX_KEYS = new Set(['time', 'level', 'name', 'agent', 'msg', 'pid', 'hostname']);

const LEVEL_COLORS: Record<string, string> = { trace: '90', debug: '36', info: '32', warn: '33', error: '31', fatal: '35' };

/** A value as it appears after `key=`: bare when that is unambiguous, else JSON (quotes, escapes). */
function valueText(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  return JSON.stringify(v);
}

/** A serialized error (pino's err serializer): "Type: message" inline; its stack below for errors and worse. */
function errorText(err: unknown): { inline: string; stack?: string } {
  if (!err || typeof err !== 'object') return { inline: valueText(err) };
  const e = err as { type?: string; message?: string; stack?: string; code?: string };
  const inline = JSON.stringify(`${e.type ?? 'Error'}${e.code ? ` ${e.code}` : ''}: ${e.message ?? ''}`);
  return e.stack ? { inline, stack: e.stack } : { inline };
}

/** The pretty form of one JSON log line (ends in a newline); a line that is not JSON passes unchanged. */
export function prettyLine(json: string, color = false): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const level = String(rec.level ?? 'info');
  const levelText = level.toUpperCase().padEnd(5);
  const who = [rec.name, rec.agent].filter((x) => x !== undefined && x !== '').join(' ');
  const parts: string[] = [];
  let stack: string | undefined;
  for (const [k, v] of Object.entries(rec)) {
    if (PREFIX_KEYS.has(k) || v === undefined) continue;
    if (k === 'err') {
      const e = errorText(v);
      parts.push(`err=${e.inline}`);
      if (level === 'error' || level === 'fatal') stack = e.stack;
      continue;
    }
    parts.push(`${k}=${valueText(v)}`);
  }
  const shownLevel = color && LEVEL_COLORS[level] ? `\x1b[${LEVEL_COLORS[level]}m${levelText}\x1b[0m` : levelText;
  const head = `${String(rec.time ?? '')} ${shownLevel} ${who ? `${who}: ` : ''}${String(rec.msg ?? '')}`;
  const line = parts.length ? `${head} ${parts.join(' ')}` : head;
  return `${line}\n${stack ? `${stack.replace(/^/gm, '    ')}\n` : ''}`;
}
