import { quoteInput } from './errors.js';

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, kb: 1024, k: 1024, mb: 1024 ** 2, m: 1024 ** 2, gb: 1024 ** 3, g: 1024 ** 3 };

/** "500ms", "30s", "5m", "2h", "5d" or a bare number of milliseconds -> milliseconds. */
export function parseDuration(text: string | number): number {
  if (typeof text === 'number' && Number.isFinite(text) && text >= 0) return text;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/i.exec(String(text));
  const unit = m ? DURATION_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new Error(`${quoteInput(text)} is not a duration (use e.g. 500ms, 30s, 5m, 2h, 5d)`);
  return Math.round(Number(m[1]) * unit);
}

/** "50MB", "512KB", "1GB" or a bare number of bytes -> bytes (binary multiples, as Postfix's message_size_limit users expect). */
export function parseSize(text: string | number): number {
  if (typeof text === 'number' && Number.isInteger(text) && text >= 0) return text;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmg]?b?)\s*$/i.exec(String(text));
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new Error(`${quoteInput(text)} is not a size (use e.g. 512KB, 50MB, 1GB)`);
  return Math.round(Number(m[1]) * unit);
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 120) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172_800) return `${(s / 3600).toFixed(1)}h`;
  return `${(s / 86_400).toFixed(1)}d`;
}

/** "host:port", "[v6]:port" -> parts; used for listen and connect addresses. */
export function parseHostPort(text: string, defaultPort?: number): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:\s]+))(?::(\d{1,5}))?$/.exec(text.trim());
  const port = m?.[3] !== undefined ? Number(m[3]) : defaultPort;
  if (!m || port === undefined || port > 65535) throw new Error(`${quoteInput(text)} is not host:port`);
  return { host: (m[1] ?? m[2])!, port };
}
