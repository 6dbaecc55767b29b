import type { OpKind, OperationRecord } from '../core/model.js';

export type StepName = 'hold' | 'retarget' | 'release' | 'flush' | 'drain';

export const STEPS: Record<OpKind, (waitDrained: boolean) => StepName[]> = {
  hold: () => ['hold'],
  release: () => ['release'],
  flush: () => ['flush'],
  switchover: (w) => (w ? ['hold', 'retarget', 'release', 'flush', 'drain'] : ['hold', 'retarget', 'release', 'flush']),
};

export function stepLabel(steps: readonly StepName[], i: number): string {
  return steps.length > 1 ? `${i + 1}/${steps.length} ${steps[i]}` : steps[i]!;
}

/** What an operation works on, for messages: its route, the addresses a staged switchover moves, or every route. */
export function subject(op: Pick<OperationRecord, 'match' | 'recipients'>): string {
  const n = op.recipients?.length ?? 0;
  if (n) return n === 1 ? op.recipients![0]! : `${n} addresses (${op.recipients![0]}, ...)`;
  return op.match || '(all routes)';
}

/** What a failure leaves behind, in words an operator can act on. */
export function safetyNote(op: OperationRecord, step: StepName | undefined): string {
  if (op.recipients?.length && (step === 'hold' || step === 'retarget')) {
    return `. ${subject(op)} stay held (mail is accepted and kept, nothing is delivered); run the same switchover again (done steps are kept)`;
  }
  if (op.kind === 'switchover' && (step === 'hold' || step === 'retarget')) {
    return `. ${op.match} stays held (mail is accepted and kept, nothing is delivered); retry the switchover or run \`mxswitch release ${op.match}\``;
  }
  if (op.kind === 'switchover') return `. ${subject(op)} ${op.recipients?.length ? 'are' : 'is'} released and routed to ${op.target}`;
  if (op.kind === 'hold') return `. ${op.match} is held in the table; agents that acked hold its mail`;
  return '';
}

/** Thrown inside a running step when the controller stops: the operation stays "running" and resumes at start. */
export class Stopping extends Error {}

/** A step failed: the message is the operator's report; `agents` lists each failed agent as "id: reason". */
export class StepFailed extends Error {
  constructor(
    message: string,
    readonly agents: string[] = [],
  ) {
    super(message);
  }
}
