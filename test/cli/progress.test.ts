// The progress view in-process: TTY mode (one redrawn status line, a line per completed step) and plain mode.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { failureLine, OperationView } from '../../control/cli/progress.js';
import { script } from './fake-admin.js';

function sink(columns = 200) {
  const out = { text: '', columns, write: (s: string) => (out.text += s) };
  return out;
}

test('TTY: status line redrawn with \\r and clear-line, ✓ line per completed step, summary with drain', () => {
  const out = sink();
  const view = new OperationView('switchover example.com', { tty: true }, out);
  for (const p of script('switchover', 'example.com', 'smtp:[192.0.2.20]:25', true)) view.update(p);
  view.finish(true);
  assert.equal(view.result(), undefined);
  assert.ok(out.text.includes('\r\x1b[2K'), 'clears the status line');
  assert.match(out.text, /[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] switchover example\.com: waiting for the controller/);
  assert.match(out.text, /[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] 1\/4 hold · .*acked 1\/2 \(mx-a\) · pending: mx-b/);
  const lines = out.text.split('\n').map((l) => l.slice(l.lastIndexOf('\x1b[2K') + 4));
  const steps = lines.filter((l) => l.startsWith('✓ '));
  assert.deepEqual(
    steps.slice(0, 4),
    ['✓ 1/4 hold: v8 acked by mx-a, mx-b', '✓ 2/4 retarget: v9 acked by mx-a, mx-b', '✓ 3/4 release: v10 acked by mx-a, mx-b', '✓ 4/4 flush: v11 acked by mx-a, mx-b'],
  );
  assert.match(out.text, /✓ switchover example\.com -> smtp:\[192\.0\.2\.20\]:25: done, verified on 2 agent\(s\): mx-a, mx-b/);
  assert.match(out.text, /AGENT\s+QUEUED\s+DELIVERED\nmx-a\s+0\s+12\nmx-b\s+0\s+3\n$/);
});

test('TTY: the status line is cut to the terminal width', () => {
  const out = sink(40);
  const view = new OperationView('hold example.com', { tty: true }, out);
  for (const p of script('hold', 'example.com')) view.update(p);
  view.finish(true);
  for (const chunk of out.text.split('\r\x1b[2K')) {
    const status = chunk.split('\n').at(-1)!;
    assert.ok(status.length <= 40, `status line longer than the terminal: ${status}`);
  }
});

test('plain: one line per progress event, no escape codes; failure line names the agents', () => {
  const out = sink();
  const view = new OperationView('hold fail.example', { tty: false }, out);
  const steps = script('hold', 'fail.example');
  for (const p of steps) view.update(p);
  view.finish(false);
  const reason = view.result();
  assert.doesNotMatch(out.text, /[\r\x1b]/);
  assert.equal(out.text.trim().split('\n').length, steps.length);
  assert.match(out.text, /acked 1\/2 \(mx-a\) · pending: mx-b/);
  assert.match(reason!, /hold failed at step hold: timed out waiting for mx-b \(lost\)/);
  assert.match(failureLine({ ...steps[0]!, operation: { ...steps[0]!.operation!, state: 'failed', error: '' } }), /hold fail\.example failed at step "hold": .*no ack from mx-b/);
});
