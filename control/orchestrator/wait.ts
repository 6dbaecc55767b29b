import { Stopping, type StepFailed } from './steps.js';

/**
 * Re-evaluates `check` whenever a waker in `wakers` is called (every registry change) until it returns true, throws,
 * `cancelled()` holds (Stopping) or `timeoutMs` passes (`timeoutReport()` words the failure).
 */
export function waitUntil(wakers: Set<() => void>, timeoutMs: number, cancelled: () => boolean, check: () => boolean, timeoutReport: () => StepFailed): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let done = false;
    const finish = (err?: Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      wakers.delete(evaluate);
      if (err) reject(err);
      else resolve();
    };
    const evaluate = () => {
      if (done) return;
      if (cancelled()) return finish(new Stopping());
      try {
        if (check()) finish();
      } catch (err) {
        finish(err as Error);
      }
    };
    const timer = setTimeout(() => finish(timeoutReport()), timeoutMs);
    timer.unref();
    wakers.add(evaluate);
    evaluate();
  });
}
