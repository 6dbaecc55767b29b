import { EventEmitter } from 'node:events';
import { MxError, quoteInput } from '../../../shared/errors.js';
import { listAddressIn, listDomain, parseListEdit, type RecipientChange, type RecipientDelta } from '../../../shared/recipient-list.js';
import type { RecipientCount, RecipientEdit, RecipientListing, RecipientStoreApi, RecipientStoreEvents, RecipientsChanged } from '../../core/ports.js';
import type { Db } from './db.js';

// A row stays after its address is removed (present = 0, a tombstone) with the version that removed it: the
// changes since any version are then one indexed query, `version > v`, whatever happened in between. Tombstones
// every agent has seen are collected (collectTombstones); `floor` in recipient_meta is the newest version
// collected, and an agent below it gets a snapshot.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS recipient_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recipient_lists (
  domain TEXT PRIMARY KEY,
  present INTEGER NOT NULL,
  version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recipients (
  domain TEXT NOT NULL,
  address TEXT NOT NULL,
  present INTEGER NOT NULL,
  version INTEGER NOT NULL,
  PRIMARY KEY (domain, address)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipients_by_version ON recipients (version);
CREATE INDEX IF NOT EXISTS recipient_lists_by_version ON recipient_lists (version);
`;

/** Versions of tombstones kept even when an agent is further behind (it then gets a snapshot). */
const TOMBSTONE_RETAIN = 1000;

/**
 * The recipient lists of record (Postfix's relay_recipient_maps, owned by the controller): per domain, the
 * addresses RCPT accepts. Every change is one transaction that bumps the list version and writes an audit row
 * (the route store's audit table). Emits 'change' with the new version.
 */
export class RecipientStore extends EventEmitter<RecipientStoreEvents> implements RecipientStoreApi {
  private current: number;
  private floor: number;
  private readonly stmts;

  constructor(private readonly db: Db) {
    super();
    db.exec(SCHEMA);
    this.stmts = {
      hasList: db.prepare('SELECT present FROM recipient_lists WHERE domain = ?').pluck(),
      setList: db.prepare('INSERT INTO recipient_lists (domain, present, version) VALUES (?, ?, ?) ON CONFLICT(domain) DO UPDATE SET present = excluded.present, version = excluded.version'),
      addAddress: db.prepare(
        'INSERT INTO recipients (domain, address, present, version) VALUES (?, ?, 1, ?) ON CONFLICT(domain, address) DO UPDATE SET present = 1, version = excluded.version WHERE present = 0',
      ),
      removeAddress: db.prepare('UPDATE recipients SET present = 0, version = ? WHERE domain = ? AND address = ? AND present = 1'),
      listsAt: db.prepare('SELECT count(*) FROM recipient_lists WHERE version = ?').pluck(),
    };
    this.current = this.readMeta('version');
    this.floor = this.readMeta('floor');
  }

  get version(): number {
    return this.current;
  }

  import(domainRaw: string, addresses: readonly string[], opts: { replace: boolean; actor: string }): RecipientsChanged {
    const domain = listDomain(domainRaw);
    const wanted = new Set(addresses.map((raw) => listAddressIn(raw, domain)));
    return this.write(opts.actor, `import ${domain}${opts.replace ? ' (replace)' : ''}`, domain, (version, counts) => {
      this.setList(domain, true, version);
      if (opts.replace) {
        for (const { address } of this.db.prepare('SELECT address FROM recipients WHERE domain = ? AND present = 1').all(domain) as { address: string }[]) {
          if (!wanted.has(address)) counts.removed += this.setAddress(domain, address, false, version);
        }
      }
      for (const address of wanted) counts.added += this.setAddress(domain, address, true, version);
    });
  }

  edit(req: RecipientEdit): RecipientsChanged {
    const { add, remove, drop, what, subject } = parseListEdit(req);
    return this.write(req.actor, what, subject, (version, counts) => {
      for (const a of add) {
        this.setList(a.domain, true, version);
        counts.added += this.setAddress(a.domain, a.address, true, version);
      }
      for (const a of remove) counts.removed += this.setAddress(a.domain, a.address, false, version);
      for (const domain of drop) {
        if (!this.hasList(domain)) throw new MxError('NOT_FOUND', `${quoteInput(domain)} has no recipient list`);
        counts.removed += this.db.prepare('UPDATE recipients SET present = 0, version = ? WHERE domain = ? AND present = 1').run(version, domain).changes;
        this.setList(domain, false, version);
      }
    });
  }

  list(domainRaw: string, limit: number): RecipientListing {
    const domain = listDomain(domainRaw);
    if (!this.hasList(domain)) throw new MxError('NOT_FOUND', `${quoteInput(domain)} has no recipient list`);
    const count = (this.db.prepare('SELECT count(*) AS n FROM recipients WHERE domain = ? AND present = 1').get(domain) as { n: number }).n;
    const addresses = (this.db.prepare('SELECT address FROM recipients WHERE domain = ? AND present = 1 ORDER BY address LIMIT ?').pluck().all(domain, limit || -1) as string[]);
    return { domain, count, addresses };
  }

  counts(): RecipientCount[] {
    return this.db
      .prepare(
        `SELECT l.domain AS domain, (SELECT count(*) FROM recipients r WHERE r.domain = l.domain AND r.present = 1) AS count
         FROM recipient_lists l WHERE l.present = 1 ORDER BY l.domain`,
      )
      .all() as RecipientCount[];
  }

  /**
   * Deletes the tombstones of versions every agent has applied (`agentVersions`: each known agent's list
   * version; 0 = it will get a snapshot anyway), and of versions more than `retain` behind in any case, so an
   * agent away for long costs one snapshot rather than keeping every removal forever. Returns how many went.
   */
  collectTombstones(agentVersions: readonly number[], retain = TOMBSTONE_RETAIN): number {
    const behind = agentVersions.filter((v) => v > 0);
    const upTo = Math.min(this.current, Math.max(behind.length ? Math.min(...behind) : this.current, this.current - retain));
    if (upTo <= this.floor) return 0;
    let removed = 0;
    this.db.transaction(() => {
      removed += this.db.prepare('DELETE FROM recipients WHERE present = 0 AND version <= ?').run(upTo).changes;
      removed += this.db.prepare('DELETE FROM recipient_lists WHERE present = 0 AND version <= ?').run(upTo).changes;
      this.db.prepare("INSERT INTO recipient_meta (key, value) VALUES ('floor', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(upTo);
    })();
    this.floor = upTo;
    return removed;
  }

  since(version: number): RecipientDelta {
    // Unknown to us (0, below the collected tombstones, or newer than this database: restored from a backup):
    // everything, as a snapshot.
    if (version <= 0 || version < this.floor || version > this.current) {
      const lists = this.db.prepare('SELECT domain FROM recipient_lists WHERE present = 1').pluck().all() as string[];
      const addresses = this.db.prepare('SELECT domain, address FROM recipients WHERE present = 1').all() as { domain: string; address: string }[];
      return { version: this.current, baseVersion: 0, snapshot: true, changes: [...lists.map((domain) => ({ domain, address: '', present: true })), ...addresses.map((a) => ({ ...a, present: true }))] };
    }
    const rows = (v: string) => this.db.prepare(v).all(version) as { domain: string; address: string; present: number }[];
    const changes: RecipientChange[] = [
      ...rows("SELECT domain, '' AS address, present FROM recipient_lists WHERE version > ?"),
      ...rows('SELECT domain, address, present FROM recipients WHERE version > ?'),
    ].map((r) => ({ domain: r.domain, address: r.address, present: r.present === 1 }));
    return { version: this.current, baseVersion: version, snapshot: false, changes };
  }

  private hasList(domain: string): boolean {
    return (this.stmts.hasList.get(domain) as number | undefined) === 1;
  }

  private setList(domain: string, present: boolean, version: number): void {
    if (this.hasList(domain) === present) return;
    this.stmts.setList.run(domain, present ? 1 : 0, version);
  }

  /** 1 when the address changed state. */
  private setAddress(domain: string, address: string, present: boolean, version: number): number {
    return (present ? this.stmts.addAddress.run(domain, address, version) : this.stmts.removeAddress.run(version, domain, address)).changes;
  }

  private readMeta(key: 'version' | 'floor'): number {
    return (this.db.prepare('SELECT value FROM recipient_meta WHERE key = ?').pluck().get(key) as number | undefined) ?? 0;
  }

  /** One transaction: the change at the next version, kept only when it changed something; audited. */
  private write(actor: string, action: string, subject: string, change: (version: number, counts: { added: number; removed: number }) => void): RecipientsChanged {
    const counts = { added: 0, removed: 0 };
    const next = this.current + 1;
    let listChanged = false;
    this.db.transaction(() => {
      change(next, counts);
      listChanged = (this.stmts.listsAt.get(next) as number) > 0;
      if (!counts.added && !counts.removed && !listChanged) return;
      this.db.prepare("INSERT INTO recipient_meta (key, value) VALUES ('version', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(next);
      this.db
        .prepare('INSERT INTO audit (actor, at, action, match, old_json, new_json, version) VALUES (?, ?, ?, ?, NULL, ?, ?)')
        .run(actor || 'unknown', Date.now(), `recipients ${action}`, subject, JSON.stringify(counts), next);
    })();
    if (!counts.added && !counts.removed && !listChanged) return { version: this.current, ...counts };
    this.current = next;
    this.emit('change', next);
    return { version: next, ...counts };
  }
}
