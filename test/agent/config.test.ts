import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { agentConfigSchema, parseConfig } from '../../shared/config.js';
import { tempDir } from '../helpers/agent.js';
import { runCli, writeYaml } from '../helpers/process.js';

describe('agent config validation', () => {
  const dir = tempDir();
  after(() => rmSync(dir, { recursive: true, force: true }));
  const base = { id: 'a1', dataDir: `${dir}/data`, smtp: { listen: '127.0.0.1:0' } };

  const cases: [string, unknown, RegExp][] = [
    ['unknown key', { ...base, smtp: { listen: '127.0.0.1:0', lisen: 1 } }, /smtp\.lisen: unknown key/],
    ['missing dataDir', { id: 'a1' }, /dataDir: required key is missing/],
    ['bad listen', { ...base, smtp: { listen: 'nowhere' } }, /smtp\.listen: expected host:port/],
    ['bad size', { ...base, smtp: { listen: '127.0.0.1:0', maxMessageSize: 'huge' } }, /smtp\.maxMessageSize: "huge" is not a size/],
    ['bad target', { ...base, routes: [{ match: 'example.com', target: 'smtp:[10.0.0.1]:25' }, { match: 'b.com', target: 'smtp:bad host' }] }, /routes\.1: target "smtp:bad host"/],
    ['bad match', { ...base, routes: [{ match: 'not a domain', target: 'smtp:[10.0.0.1]:25' }] }, /routes\.0: match "not a domain"/],
    ['wrong type', { ...base, smtp: { listen: '127.0.0.1:0', maxConnections: 'many' } }, /: smtp\.maxConnections: expected a number, got string "many"$/],
    ['a mapping where a list belongs', { ...base, routes: { match: 'example.com' } }, /: routes: expected a list, got a mapping$/],
    ['unreadable TLS file', { ...base, smtp: { listen: '127.0.0.1:0', tls: { cert: '/nonexistent.crt', key: '/nonexistent.key' } } }, /smtp\.tls\.cert: file cannot be read/],
    ['bad duration', { ...base, retry: { intervals: ['1x'] } }, /retry\.intervals\.0: "1x" is not a duration/],
    ['too few max recipients', { ...base, smtp: { listen: '127.0.0.1:0', maxRecipients: 10 } }, /smtp\.maxRecipients: /],
  ];
  for (const [name, doc, expected] of cases) {
    test(`${name} -> error naming the key`, () => {
      assert.throws(() => parseConfig(agentConfigSchema, doc), expected);
    });
  }

  test('every problem of a file in one error, in the order of the schema', () => {
    const doc = { ...base, smtp: { listen: '127.0.0.1:0', maxConnections: 'abc', bareNewline: 'maybe' }, retry: { jitter: [1] } };
    assert.throws(
      () => parseConfig(agentConfigSchema, doc),
      (e: Error) => e.message === 'smtp.bareNewline: Invalid option: expected one of "normalize"|"reject"; also smtp.maxConnections: expected a number, got string "abc"; retry.jitter: expected a number, got a list',
    );
  });

  test('a bad value in an MXSWITCH_* variable names the variable', () => {
    assert.throws(() => parseConfig(agentConfigSchema, base, { MXSWITCH_SMTP_MAX_CONNECTIONS: 'abc' }), (e: Error) => e.message === 'MXSWITCH_SMTP_MAX_CONNECTIONS (smtp.maxConnections): expected a number, got string "abc"');
    assert.throws(() => parseConfig(agentConfigSchema, base, { MXSWITCH_RETRY_INTERVALS: '[1s' }), /: MXSWITCH_RETRY_INTERVALS: not a value \(/);
  });

  test('environment overrides config keys (MXSWITCH_SMTP_MAX_MESSAGE_SIZE)', () => {
    const c = parseConfig(agentConfigSchema, base, { MXSWITCH_SMTP_MAX_MESSAGE_SIZE: '1MB', MXSWITCH_RETRY_INTERVALS: '[1s, 2s]' });
    assert.equal(c.smtp.maxMessageSize, 1024 * 1024);
    assert.deepEqual(c.retry.intervals, [1000, 2000]);
  });

  test('mxswitch agent with a bad config exits 2 with one line naming the key', async () => {
    const file = writeYaml(dir, 'bad.yaml', { ...base, routes: [{ match: 'example.com', target: 'lmtp:[10.0.0.1]' }] });
    const r = await runCli(['agent', '--config', file]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^mxswitch: config error: routes\.0: target "lmtp:\[10\.0\.0\.1\]" is not smtp:\[host\]:port or smtp:host:port\n$/);
  });

  test('mxswitch agent with invalid YAML or a missing file exits 2', async () => {
    const file = writeYaml(dir, 'broken.yaml', 'id: [unclosed\n');
    const r1 = await runCli(['agent', '--config', file]);
    assert.equal(r1.code, 2);
    assert.match(r1.stderr, /is not valid YAML/);
    const r2 = await runCli(['agent', '--config', `${dir}/missing.yaml`]);
    assert.equal(r2.code, 2);
    assert.match(r2.stderr, /cannot read config file/);
  });
});
