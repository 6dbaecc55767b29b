import { MxError } from './errors.js';

/** One meaningful line of an operator's file: its number (from 1) and its text without comment and blanks around. */
export interface TextLine {
  n: number;
  text: string;
}

/**
 * The lines of a map-style file (recipient lists, transport maps): `#` starts a comment, blank lines are skipped.
 * Binary data fails the whole file with the line it is on (a NUL byte, or bytes that are not UTF-8): such a file
 * is never half-read.
 */
export function textLines(data: Buffer): TextLine[] {
  if (data.includes(0)) throw new MxError('INVALID_ARGUMENT', `line ${lineOf(data, data.indexOf(0))}: not a text file (NUL byte)`);
  const text = new TextDecoder('utf-8', { fatal: false }).decode(data);
  const out: TextLine[] = [];
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/#.*/, '').trim();
    if (!line) continue;
    if (line.includes('\uFFFD')) throw new MxError('INVALID_ARGUMENT', `line ${i + 1}: not valid UTF-8 text`);
    out.push({ n: i + 1, text: line });
  }
  return out;
}

function lineOf(data: Buffer, offset: number): number {
  let n = 1;
  for (let i = 0; i < offset; i++) if (data[i] === 0x0a) n++;
  return n;
}
