import type { Command } from 'commander';
import { errorMessage, UsageError } from '../../../shared/errors.js';
import { listAddress, listDomain } from '../../../shared/recipient-list.js';
import { actor, withAdmin } from '../admin-client.js';
import { checkPositiveInt, readAddressFile } from '../args.js';
import { action, emit, table } from '../output.js';
import { exitHelp, GROUP_HELP, operator, type CommonOptions } from './common.js';

/**
 * `recipients import|add|rm|drop|ls|count`: the controller's recipient lists (Postfix's relay_recipient_maps). A
 * domain with a list accepts RCPT only for its addresses (550 5.1.1 for the others, at RCPT: nothing is queued,
 * so no bounce goes to a forged sender); a domain without one accepts any local part. Input is checked before
 * anything is sent.
 */

const LIST_HELP = 'Agents apply a new list version within seconds; `mxswitch status --json` shows each agent\'s recipientsVersion.';

/** Adds the `recipients` group. */
export function registerRecipients(program: Command): void {
  const group = program
    .command('recipients')
    .description('Read and change the recipient lists on the controller: where a domain has one, agents accept RCPT only for listed addresses.')
    .addHelpText('after', GROUP_HELP);
  const stored = (what: string) => exitHelp('the controller to store the new list version.', `${what} (a new list version, or none when nothing changed)`, 'the controller refused or could not be reached');

  operator(group, 'import', `Set DOMAIN's list from FILE: one address per line, # comments, blank lines skipped. Merged into the list, or with --replace the list becomes exactly FILE. ${LIST_HELP}`, stored('imported'))
    .argument('<domain>', 'the domain every address of FILE belongs to')
    .argument('<file>', 'the list (a bad line fails the whole import with its line number; nothing changes)')
    .option('--replace', 'addresses not in FILE leave the list')
    .action(action(importList));

  operator(group, 'add', `Add addresses (their domains get a list if they had none: then only listed addresses are accepted there). ${LIST_HELP}`, stored('added'))
    .argument('<address...>', 'addresses')
    .action(action((addresses: string[], opts: CommonOptions) => edit(opts, { add: addresses.map(checkAddress) })));

  operator(group, 'rm', `Remove addresses from their domains' lists (mail to them is then refused with 550 5.1.1). ${LIST_HELP}`, stored('removed'))
    .argument('<address...>', 'addresses')
    .action(action((addresses: string[], opts: CommonOptions) => edit(opts, { remove: addresses.map(checkAddress) })));

  operator(group, 'drop', `Remove DOMAIN's whole list: any local part of it is accepted again. ${LIST_HELP}`, stored('dropped'))
    .argument('<domain>', 'the domain')
    .action(action((domain: string, opts: CommonOptions) => edit(opts, { dropDomains: [checkDomain(domain)] })));

  operator(group, 'ls', 'List the addresses of DOMAIN\'s list (sorted).', exitHelp('one answer from the controller.', 'listed', 'no list for DOMAIN, or the controller refused or could not be reached'))
    .argument('<domain>', 'the domain')
    .option('--limit <n>', 'show at most N addresses')
    .action(action(ls));

  operator(group, 'count', 'The domains that have a list, with the number of addresses, and the list version.', exitHelp('one answer from the controller.', 'counted', 'the controller refused or could not be reached')).action(
    action(count),
  );
}

function checkAddress(text: string): string {
  try {
    return listAddress(text).address;
  } catch (err) {
    throw new UsageError(`ADDRESS ${errorMessage(err)}`);
  }
}

function checkDomain(text: string): string {
  try {
    return listDomain(text);
  } catch (err) {
    throw new UsageError(`DOMAIN: ${errorMessage(err)}`);
  }
}

async function importList(domainText: string, file: string, opts: CommonOptions & { replace?: boolean }): Promise<void> {
  const domain = checkDomain(domainText);
  const addresses = readAddressFile(file, domain, 'nothing was imported');
  const res = await withAdmin(opts, (a) => a.importRecipients(domain, addresses, opts.replace ?? false, actor()));
  const change = res.change ?? { version: 0, added: 0, removed: 0 };
  emit(opts, { domain, addresses: addresses.length, replace: opts.replace ?? false, ...change }, (v) =>
    `${v.domain}: ${v.addresses} addresses read, ${v.added} added, ${v.removed} removed: ${v.added || v.removed ? `list version ${v.version}` : `nothing changed (list version ${v.version})`}`,
  );
}

async function edit(opts: CommonOptions, req: { add?: string[]; remove?: string[]; dropDomains?: string[] }): Promise<void> {
  const res = await withAdmin(opts, (a) => a.editRecipients({ ...req, actor: actor() }));
  const change = res.change ?? { version: 0, added: 0, removed: 0 };
  emit(opts, change, (v) => `${v.added} added, ${v.removed} removed: ${v.added || v.removed || req.dropDomains ? `list version ${v.version}` : `nothing changed (list version ${v.version})`}`);
}

async function ls(domainText: string, opts: CommonOptions & { limit?: string }): Promise<void> {
  const domain = checkDomain(domainText);
  const limit = checkPositiveInt('--limit', opts.limit) ?? 0;
  const res = await withAdmin(opts, (a) => a.listRecipients({ domain, limit }));
  const total = res.domains[0]?.count ?? 0;
  emit(opts, { version: res.version, domain, count: total, addresses: res.addresses }, (v) => {
    const more = v.count - v.addresses.length;
    return [...v.addresses, `${v.count} addresses in ${v.domain} (list version ${v.version})${more > 0 ? `; ${more} more not shown (--limit)` : ''}`].join('\n');
  });
}

async function count(opts: CommonOptions): Promise<void> {
  const res = await withAdmin(opts, (a) => a.listRecipients({}));
  emit(opts, { version: res.version, domains: res.domains }, (v) =>
    v.domains.length
      ? `${table(['DOMAIN', 'ADDRESSES'], v.domains.map((d) => [d.domain, String(d.count)]))}\nlist version ${v.version}`
      : `no recipient lists: every routed domain accepts any local part (list version ${v.version})`,
  );
}
