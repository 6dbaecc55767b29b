import type { ClientReadableStream } from '@grpc/grpc-js';
import { formatDuration } from '../../shared/units.js';
import { ControllerError, type AdminConnection, type Operation, type OperationProgress } from './admin-client.js';
import { table } from './output.js';

/**
 * Progress of a waiting step (hold, release, switchover, flush, follow).
 * - TTY: one status line redrawn in place (spinner, acked/pending agents), a line per completed step.
 * - not a TTY: one plain line per progress event, no escape codes.
 * - --json: one JSON object per progress event (NDJSON) and a final {"type":"result"} object.
 */

export interface ViewMode {
  json?: boolean;
  /** Defaults to stdout being a TTY. */
  tty?: boolean;
}

interface Sink {
  write(text: string): unknown;
  columns?: number;
}

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const CLEAR_LINE = '\r\x1b[2K';

export function describeOperation(op: Operation | undefined): string {
  if (!op) return 'operation';
  return [op.kind, op.match || (op.kind === 'flush' ? '(all routes)' : ''), op.target ? `-> ${op.target}` : ''].filter(Boolean).join(' ');
}

function ackPart(p: OperationProgress): string | undefined {
  if (!p.waitingVersion && p.acked.length === 0 && p.pending.length === 0) return undefined;
  const total = p.acked.length + p.pending.length;
  const head = p.waitingVersion ? `v${p.waitingVersion} acked ${p.acked.length}/${total}` : `done ${p.acked.length}/${total}`;
  return p.acked.length ? `${head} (${p.acked.join(', ')})` : head;
}

/** The parts of one progress line: step, message, acks, pending, failed, drain. */
export function progressParts(p: OperationProgress): string[] {
  const parts: string[] = [];
  const op = p.operation;
  parts.push(op?.step || op?.state || 'progress');
  if (p.message) parts.push(p.message);
  const acks = ackPart(p);
  if (acks) parts.push(acks);
  if (p.pending.length) parts.push(`pending: ${p.pending.join(', ')}`);
  if (p.failed.length) parts.push(`failed: ${p.failed.join('; ')}`);
  if (p.drain.length) parts.push(`drain: ${p.drain.map((d) => `${d.agentId} ${d.queued} queued, ${d.delivered} delivered`).join('; ')}`);
  return parts;
}

/** The one-line reason for a failed or unfinished operation, naming the agents. */
export function failureLine(p: OperationProgress): string {
  const op = p.operation;
  const extra: string[] = [];
  const base = op?.error
    ? op.error
    : `${describeOperation(op)} failed${op?.step ? ` at step "${op.step}"` : ''}: ${p.message || (op?.state === 'running' ? 'still running' : 'no reason given')}`;
  const missing = (id: string) => !base.includes(id.split(':')[0]!);
  const pending = p.pending.filter(missing);
  const failed = p.failed.filter(missing);
  if (pending.length) extra.push(`no ack from ${pending.join(', ')}`);
  if (failed.length) extra.push(`failed on ${failed.join('; ')}`);
  return `${base}${extra.length ? ` (${extra.join('; ')})` : ''}`.replace(/\s+/g, ' ');
}

export class OperationView {
  private readonly json: boolean;
  /** The status line is live (TTY and not finished). */
  private tty: boolean;
  /** Output goes to a terminal: ✓ marks. */
  private readonly fancy: boolean;
  private readonly started = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private frame = 0;
  private status = '';
  private currentStep: string | undefined;
  private stepProgress: OperationProgress | undefined;
  readonly ackedEver = new Set<string>();
  /** The latest non-empty drain report (the final "done" progress carries none). */
  private drain: OperationProgress['drain'] = [];
  last: OperationProgress | undefined;

  constructor(
    private readonly title: string,
    mode: ViewMode,
    private readonly out: Sink = process.stdout,
  ) {
    this.json = mode.json ?? false;
    this.tty = !this.json && (mode.tty ?? (process.stdout.isTTY === true && process.env.TERM !== 'dumb'));
    this.fancy = this.tty;
    if (this.tty) {
      this.status = `${title}: waiting for the controller`;
      this.timer = setInterval(() => this.redraw(), 100);
      this.timer.unref();
      this.redraw();
    }
  }

  private elapsed(): string {
    return formatDuration(Date.now() - this.started);
  }

  private redraw(): void {
    if (!this.tty) return;
    this.frame = (this.frame + 1) % SPINNER.length;
    const line = `${SPINNER[this.frame]} ${this.status} (${this.elapsed()})`;
    const width = Math.max(20, (this.out.columns || 100) - 1);
    this.out.write(`${CLEAR_LINE}${line.length > width ? `${line.slice(0, width - 1)}…` : line}`);
  }

  /** Prints a whole line above the status line (TTY) or just a line. */
  private println(text: string): void {
    if (this.tty) {
      this.out.write(`${CLEAR_LINE}${text}\n`);
      this.redraw();
    } else this.out.write(`${text}\n`);
  }

  private stepDone(p: OperationProgress | undefined, step: string): void {
    if (!p) return;
    const acks = p.acked.length ? `: ${p.waitingVersion ? `v${p.waitingVersion} ` : ''}acked by ${p.acked.join(', ')}` : p.message ? `: ${p.message}` : '';
    this.println(`${this.fancy ? '✓' : 'done:'} ${step}${acks}`);
  }

  update(p: OperationProgress): void {
    for (const id of p.acked) this.ackedEver.add(id);
    if (p.drain.length) this.drain = p.drain;
    if (this.json) {
      this.out.write(`${JSON.stringify({ type: 'progress', ...p })}\n`);
      this.last = p;
      return;
    }
    const step = p.operation?.step ?? '';
    if (!this.tty) {
      this.out.write(`+${this.elapsed()} ${progressParts(p).join(' · ')}\n`);
    } else {
      if (this.currentStep !== undefined && step !== this.currentStep && this.currentStep !== '') this.stepDone(this.stepProgress, this.currentStep);
      this.status = p.message ? progressParts(p).join(' · ') : `${this.title}: ${progressParts(p).join(' · ')}`;
      this.redraw();
    }
    this.currentStep = step;
    this.stepProgress = p;
    this.last = p;
  }

  /** Stops the spinner; on success closes the last step with a ✓ line. */
  finish(success: boolean): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (!this.tty) return;
    if (success && this.currentStep && this.currentStep !== 'done') this.stepDone(this.stepProgress, this.currentStep);
    this.out.write(CLEAR_LINE);
    this.tty = false;
  }

  /** The final result: JSON object (ok true/false) or a human summary on success. Returns the failure line, if any. */
  result(error?: string): string | undefined {
    const p = this.last;
    const op = p?.operation;
    const ok = error === undefined && op?.state === 'done' && p!.failed.length === 0 && p!.pending.length === 0;
    const reason = ok ? undefined : (error ?? (p ? failureLine(p) : `${this.title}: the controller sent no progress`));
    if (this.json) {
      this.out.write(
        `${JSON.stringify({
          type: 'result',
          ok,
          ...(reason ? { error: reason } : {}),
          operation: op ?? null,
          acked: p?.acked ?? [],
          pending: p?.pending ?? [],
          failed: p?.failed ?? [],
          drain: this.drain,
          elapsedMs: Date.now() - this.started,
        })}\n`,
      );
    } else if (ok) {
      const agents = p!.acked.length ? p!.acked : [...this.ackedEver];
      const excluded = op?.excluded.length ? `; excluded: ${op.excluded.join(', ')}` : '';
      const on = agents.length ? ` on ${agents.length} agent(s): ${agents.join(', ')}` : ' (no agents expected)';
      this.out.write(`${this.fancy ? '✓ ' : ''}${describeOperation(op)}: done, verified${on}${excluded} in ${this.elapsed()}\n`);
      if (this.drain.length) {
        this.out.write(`${table(['AGENT', 'QUEUED', 'DELIVERED'], this.drain.map((d) => [d.agentId, String(d.queued), String(d.delivered)]))}\n`);
      }
    }
    return reason;
  }
}

/**
 * Streams an operation's progress until it ends. Resolves when it is done and verified on every expected agent;
 * throws a ControllerError (exit 1) with a one-line reason otherwise. Ctrl-C detaches: the operation keeps
 * running on the controller and can be re-attached with `mxswitch operation follow ID`.
 */
export async function followOperation<T extends { progress?: OperationProgress | undefined }>(
  admin: AdminConnection,
  title: string,
  stream: ClientReadableStream<T>,
  mode: ViewMode,
): Promise<OperationProgress> {
  const view = new OperationView(title, mode);
  let detached = false;
  const onSigint = () => {
    detached = true;
    stream.cancel();
  };
  process.on('SIGINT', onSigint);
  const reattach = () => (view.last?.operation?.id ? `; re-attach with: mxswitch operation follow ${view.last.operation.id}` : '');
  try {
    for await (const msg of admin.iterate(stream)) {
      if (msg.progress) view.update(msg.progress);
    }
  } catch (err) {
    view.finish(false);
    const line = detached
      ? `interrupted; the operation continues on the controller${reattach() || ' (see mxswitch status)'}`
      : `${(err as Error).message}${reattach()}`;
    if (view.last || mode.json) view.result(line);
    throw detached ? new ControllerError(line) : Object.assign(err as Error, { message: line });
  } finally {
    process.off('SIGINT', onSigint);
  }
  const state = view.last?.operation?.state;
  const ok = state === 'done' && view.last!.failed.length === 0 && view.last!.pending.length === 0;
  view.finish(ok);
  if (state === 'running' || !view.last) {
    const line = view.last
      ? `${describeOperation(view.last.operation)}: the controller ended the stream while the operation is still running${reattach()}`
      : `${title}: the controller ended the stream without any progress`;
    view.result(line);
    throw new ControllerError(line);
  }
  const failure = view.result();
  if (failure) throw new ControllerError(failure);
  return view.last;
}
