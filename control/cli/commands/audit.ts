import type { Command } from 'commander';
import type { AuditEntry } from '../admin-client.js';
import { withAdmin } from '../admin-client.js';
import { checkPositiveInt } from '../args.js';
import { action, emit, table } from '../output.js';
import { routeText } from '../route-text.js';
import { exitHelp, GROUP_HELP, operator, type CommonOptions } from './common.js';

/** `audit ls`: the controller's record of every change (routing table, recipient lists): who, when, what, old -> new. */

/** Adds the `audit` group. */
export function registerAudit(program: Command): void {
  const audit = program.command('audit').description('The audit trail kept by the controller: every change to the routing table and the recipient lists.').addHelpText('after', GROUP_HELP);
  operator(
    audit,
    'ls',
    'The newest changes first: when (UTC), who (the name of the token that made it: tokens.admin entries), the table version it made, the action, MATCH, and old -> new.',
    exitHelp('one answer from the controller.', 'listed', 'the controller refused or could not be reached'),
  )
    .option('--limit <n>', 'at most this many records (default 50, at most 1000)')
    .action(action(auditLs));
}

interface AuditRow {
  id: number;
  at: string;
  actor: string;
  version: number;
  action: string;
  match: string;
  old: unknown;
  new: unknown;
}

async function auditLs(opts: CommonOptions & { limit?: string }): Promise<void> {
  const limit = checkPositiveInt('--limit', opts.limit) ?? 0;
  const res = await withAdmin(opts, (a) => a.listAudit(limit));
  const records = res.entries.map(auditRow);
  emit(opts, { records }, (v) =>
    v.records.length
      ? table(
          ['WHEN', 'WHO', 'VERSION', 'ACTION', 'MATCH', 'CHANGE'],
          v.records.map((r) => [r.at.replace(/\.\d{3}Z$/, 'Z'), r.actor, `v${r.version}`, r.action, r.match, `${valueText(r.old)} -> ${valueText(r.new)}`]),
        )
      : 'no changes recorded yet',
  );
}

function auditRow(e: AuditEntry): AuditRow {
  const parse = (json: string): unknown => (json === '' ? null : (JSON.parse(json) as unknown));
  return { id: e.id, at: new Date(e.atMs).toISOString(), actor: e.actor, version: e.version, action: e.action, match: e.match, old: parse(e.oldJson), new: parse(e.newJson) };
}

/** A route as `route ls` would show it ("smtp:[h]:25 held tls=required"); a list change as its counts; none as "-". */
function valueText(v: unknown): string {
  if (v === null || v === undefined) return '-';
  if (typeof v !== 'object') return JSON.stringify(v);
  const o = v as Record<string, unknown>;
  if (typeof o.target === 'string') return routeText({ target: o.target, hold: o.hold === true, tls: String(o.tls ?? ''), verify: String(o.verify ?? '') });
  if (typeof o.added === 'number' && typeof o.removed === 'number') return `+${o.added} -${o.removed} addresses`;
  return JSON.stringify(v);
}
