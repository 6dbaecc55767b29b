import { RawSmtp } from '../helpers/raw-smtp.js';

/** Where a transaction was decided: the refused command, or '.' for the reply to the end of the data. */
export type Stage = 'MAIL' | 'RCPT' | 'DATA' | '.';

/** One message through a raw session: the reply that decided it (MAIL's when MAIL is refused) and where. */
export async function send(port: number, id: string, size: number): Promise<{ reply: string; at: Stage }> {
  const c = await RawSmtp.open(port);
  try {
    await c.command('EHLO sender.test');
    const mail = await c.command('MAIL FROM:<s@sender.test>');
    if (!mail.startsWith('250')) return { reply: mail, at: 'MAIL' };
    const rcpt = await c.command('RCPT TO:<u@example.com>');
    if (!rcpt.startsWith('250')) return { reply: rcpt, at: 'RCPT' };
    const data = await c.command('DATA');
    if (!data.startsWith('354')) return { reply: data, at: 'DATA' };
    const line = `${'z'.repeat(998)}\r\n`;
    c.write(`Message-ID: <${id}@sender.test>\r\nSubject: ${id}\r\n\r\n${line.repeat(Math.ceil(size / line.length))}.\r\n`);
    return { reply: await c.reply(20_000), at: '.' };
  } finally {
    c.close();
  }
}
