/** What the controller's core works with: operations and their progress. Transport- and storage-free. */
import type { HealthReport } from '../../shared/wire.js';

export type OpKind = 'hold' | 'release' | 'switchover' | 'flush';
export type OpState = 'running' | 'done' | 'failed';
export interface OperationRecord {
  id: string;
  kind: OpKind;
  /** Normalised route match ('' = every route, flush only). */
  match: string;
  target: string;
  state: OpState;
  /** Human-readable current step, e.g. "2/4 retarget". */
  step: string;
  stepIndex: number;
  error: string;
  startedAt: number;
  finishedAt: number;
  excluded: string[];
  timeoutMs: number;
  waitDrained: boolean;
  actor: string;
  /** Table version the last table step produced (flush commands require it). */
  version: number;
  /** When the release step completed (drain baseline), 0 before. */
  releasedAt: number;
  /** A staged switchover: the addresses it moves (each gets an address route); `match` is then ''. */
  recipients?: string[];
}

export interface AgentDrainInfo {
  agentId: string;
  queued: number;
  delivered: number;
  drained: boolean;
}

export interface Progress {
  operation: OperationRecord;
  message: string;
  waitingVersion: number;
  acked: string[];
  pending: string[];
  failed: string[];
  drain: AgentDrainInfo[];
}

/** An agent's last health report, as the controller keeps it. */
export type AgentHealth = HealthReport;
