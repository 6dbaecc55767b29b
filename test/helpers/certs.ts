import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface TestPki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A client certificate from a different CA (must be refused under mutual TLS). */
  strangerCert: string;
  strangerKey: string;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

function issue(dir: string, name: string, subject: string, caName: string, ext: string): void {
  openssl(dir, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-subj', subject, '-out', `${name}.csr`]);
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', `${caName}.crt`, '-CAkey', `${caName}.key`, '-CAcreateserial', '-days', '2', '-out', `${name}.crt`, '-extfile', `${name}.ext`]);
}

/** A throwaway CA with a server certificate for 127.0.0.1/localhost and a client certificate (openssl CLI). */
export function makePki(dir: string): TestPki {
  for (const ca of ['ca', 'stranger-ca']) {
    openssl(dir, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${ca}.key`, '-out', `${ca}.crt`, '-days', '2', '-subj', `/CN=mxswitch test ${ca}`]);
  }
  issue(dir, 'server', '/CN=localhost', 'ca', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  issue(dir, 'client', '/CN=mx-agent', 'ca', 'extendedKeyUsage=clientAuth\n');
  issue(dir, 'stranger', '/CN=stranger', 'stranger-ca', 'extendedKeyUsage=clientAuth\n');
  const p = (f: string) => join(dir, f);
  return {
    dir,
    ca: p('ca.crt'),
    serverCert: p('server.crt'),
    serverKey: p('server.key'),
    clientCert: p('client.crt'),
    clientKey: p('client.key'),
    strangerCert: p('stranger.crt'),
    strangerKey: p('stranger.key'),
  };
}

/**
 * Certificates of `pki`'s CA for agents (CN and a DNS SAN = the id, IP SAN 127.0.0.1, server and client use): what
 * `shadow.tls` expects of every agent. Returns id -> {cert, key} paths.
 */
export function agentCertificates(pki: TestPki, ids: readonly string[]): Map<string, { cert: string; key: string }> {
  const out = new Map<string, { cert: string; key: string }>();
  for (const id of ids) {
    issue(pki.dir, `agent-${id}`, `/CN=${id}`, 'ca', `subjectAltName=DNS:${id},IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n`);
    out.set(id, { cert: join(pki.dir, `agent-${id}.crt`), key: join(pki.dir, `agent-${id}.key`) });
  }
  return out;
}
