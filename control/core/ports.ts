/**
 * The controller core's ports: what the orchestrator, registry and admin service need from storage (SQLite or NATS
 * KV) and from the agents' transport (gRPC sessions or NATS request/reply). The adapters implement them.
 */
import type { EventEmitter } from 'node:events';
import type { ErrorCode } from '../../shared/errors.js';
import type { RouteDelta } from '../../shared/route-delta.js';
import type { Route } from '../../shared/routes.js';
import type { AgentCommand } from '../../shared/wire.js';
import type { OperationRecord, OpState, Progress } from './model.js';

/** Error codes of route-store writes (mapped to gRPC statuses by the admin service). */
export const INVALID_ARGUMENT = 'INVALID_ARGUMENT' satisfies ErrorCode;
export const NOT_FOUND = 'NOT_FOUND' satisfies ErrorCode;
export const VERSION_CONFLICT = 'VERSION_CONFLICT' satisfies ErrorCode;

export interface WriteOptions {
  /** Apply only if the current version equals this; 0 or undefined = unconditional. */
  expectedVersion?: number;
  actor?: string;
}

export interface AuditRecord {
  id: number;
  actor: string;
  at: number;
  /** 'import': a whole `route import` in one record (NATS mode; SQLite keeps one record per route). */
  action: 'set' | 'remove' | 'hold' | 'release' | 'import';
  match: string;
  old: Route | null;
  new: Route | null;
  version: number;
}

export interface Snapshot {
  version: number;
  routes: readonly Route[];
}

/** After a write commits: the new version (the table itself is read with snapshot() or since(), when needed). */
export type RouteStoreEvents = { change: [{ version: number }] };

/** `route import`: many routes in one version. */
export interface ImportOptions extends WriteOptions {
  /** Remove every route the import does not list. */
  replace: boolean;
  /** Compute the counts, change nothing. */
  dryRun?: boolean;
  /**
   * The routes' hold flags are what they say, releases included. Only for the orchestrator's steps (a staged
   * switchover releases its addresses in one version); an operator's import never releases a hold.
   */
  setHolds?: boolean;
}

/** What an import changed (or, with dryRun, would change); `version` is the table's version after it. */
export interface ImportResult {
  version: number;
  added: number;
  changed: number;
  removed: number;
  unchanged: number;
  dryRun: boolean;
}

/** The changes after a version, for agents that have it (the SQLite store keeps tombstones for this). */
export interface RouteDeltaSource {
  readonly version: number;
  /** What an agent at `version` lacks: the changes since, or a snapshot when that version is unknown here. */
  since(version: number): RouteDelta;
}

/**
 * The routing table of record as the rest of the controller sees it: SQLite (RouteStore) or a NATS KV bucket
 * (NatsRouteStore). Reads are synchronous (a cached snapshot); writes may be asynchronous and are compare-and-set.
 * 'change' is emitted after a write commits, whoever made it.
 */
export interface RouteStoreApi extends EventEmitter<RouteStoreEvents> {
  snapshot(): Snapshot;
  readonly version: number;
  get(match: string): Route | undefined;
  set(route: Route, opts?: WriteOptions): number | Promise<number>;
  remove(match: string, opts?: WriteOptions): number | Promise<number>;
  setHold(match: string, hold: boolean, opts?: WriteOptions): number | Promise<number>;
  /** Many routes in one version; nothing changes on an error. */
  importRoutes(routes: readonly Route[], opts: ImportOptions): ImportResult | Promise<ImportResult>;
  /** Newest first. */
  audit(limit?: number): AuditRecord[] | Promise<AuditRecord[]>;
  /** An agent applied a version above ours (the store was replaced or restored): the next change goes above it. */
  raiseVersionFloor(seen: number): void;
}

export type OperationStoreEvents = {
  /** An operation changed in another process (NATS: another controller replica); with its progress when it has one. */
  remote: [OperationRecord, Progress | undefined];
  /** This process no longer owns an operation it was running (another replica took it over). */
  lost: [string];
};

/** Thrown by save() when another process owns the operation now: the local run stops without writing more. */
export class OwnershipLost extends Error {
  constructor(readonly operationId: string) {
    super(`operation ${operationId} is run by another controller now`);
  }
}

/**
 * Where operations (the orchestrator's step machines) are persisted: SQLite for a single controller, a NATS KV bucket
 * shared by replicas. Reads are synchronous (SQLite, or the NATS store's watched cache); writes are asynchronous.
 */
export interface OperationStore extends EventEmitter<OperationStoreEvents> {
  get(id: string): OperationRecord | undefined;
  /** Newest first. */
  list(limit: number): OperationRecord[];
  /** Oldest first. */
  running(): OperationRecord[];
  countByState(): Record<OpState, number>;
  /** Persists a new operation owned by this process; OPERATION_RUNNING when its route is taken (across replicas). */
  insert(op: OperationRecord): Promise<void>;
  /**
   * Persists a change of an operation this process runs (`final`: its last progress, when it ends); OwnershipLost
   * when another process took it over.
   */
  save(op: OperationRecord, final?: Progress): Promise<void>;
  /** The latest progress of an operation this process runs, for followers elsewhere (best effort). */
  progress(p: Progress): void;
  /** Running operations this process should run now: at start the ones left running; later (NATS) orphans. */
  claim(): Promise<OperationRecord[]>;
  /** How often claim() should be called again (0 = only at start). */
  readonly claimIntervalMs: number;
  /** True when `id` is running and another process runs (or will resume) it. */
  runningElsewhere(id: string): boolean;
  /** This process stops running `id` while it is still running; handOver = let another process resume it at once. */
  release(id: string, handOver: boolean): Promise<void>;
  close(): Promise<void>;
}

/** What an agent said about a command: never thrown, so a fleet-wide command reports every agent. */
export interface CommandOutcome {
  ok: boolean;
  error: string;
  json: string;
}


/** Runs a command on one agent, whatever the transport (gRPC session, NATS request/reply). */
export interface AgentCommander {
  /** A missing agent or a timeout is an outcome ({ok: false}), never an exception. */
  command(agentId: string, command: AgentCommand, minVersion: number, timeoutMs: number): Promise<CommandOutcome>;
}

/** An agent as the directory keeps it. */
export interface DirectoryEntry {
  id: string;
  region: string;
  hostname: string;
  bootId: string;
  lastSeen: number;
}

/** Where the set of registered agents is kept: it is the expected fleet unless expectedAgents lists it. */
export interface AgentDirectory {
  load(): DirectoryEntry[];
  has(id: string): boolean;
  upsert(agent: Omit<DirectoryEntry, 'lastSeen'>, now: number): void;
  delete(id: string): void;
}

/** What a recipient-list change did. */
export interface RecipientsChanged {
  /** The list version after it (the same as before when nothing changed). */
  version: number;
  added: number;
  removed: number;
}

export interface RecipientEdit {
  add: readonly string[];
  remove: readonly string[];
  dropDomains: readonly string[];
  actor: string;
}

export interface RecipientCount {
  domain: string;
  count: number;
}

export interface RecipientListing extends RecipientCount {
  addresses: string[];
}

export type RecipientStoreEvents = { change: [number] };

/**
 * The recipient lists of record: which local parts of a domain RCPT accepts (a domain without a list accepts
 * any). Versioned on their own (not with the route table): agents ack the list version they have applied.
 */
export interface RecipientStoreApi extends EventEmitter<RecipientStoreEvents> {
  readonly version: number;
  /** Sets (merge, or `replace`) one domain's list in one version; nothing changes on an error. */
  import(domain: string, addresses: readonly string[], opts: { replace: boolean; actor: string }): RecipientsChanged | Promise<RecipientsChanged>;
  edit(req: RecipientEdit): RecipientsChanged | Promise<RecipientsChanged>;
  list(domain: string, limit: number): RecipientListing;
  counts(): RecipientCount[];
}
