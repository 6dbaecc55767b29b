import { readFileSync } from 'node:fs';
import type { PeerCertificate } from 'node:tls';
import { credentials, ServerCredentials, type ChannelCredentials } from '@grpc/grpc-js';
import type { AgentConfig } from '../../shared/config.js';

type ShadowTls = NonNullable<NonNullable<AgentConfig['shadow']>['tls']>;

/** The agent ids a certificate names: its subject CN and its DNS subject alternative names. */
export function certificateNames(cert: PeerCertificate | undefined): string[] {
  if (!cert) return [];
  const cn = cert.subject?.CN;
  const names = (Array.isArray(cn) ? cn : cn ? [cn] : []) as string[];
  for (const part of (cert.subjectaltname ?? '').split(',')) {
    const m = /^\s*DNS:(.+)$/.exec(part);
    if (m) names.push(m[1]!.trim());
  }
  return names;
}

/**
 * The peer port's transport: plaintext (the pair credential is the authentication), or with `shadow.tls` mutual
 * TLS where both ends present a certificate of the fleet's CA naming their agent id (CN or a DNS SAN), checked on
 * both sides beside the credential, so a stolen credential alone is not enough.
 */
export class ShadowTransport {
  private readonly files: { ca: Buffer; cert: Buffer; key: Buffer } | undefined;

  constructor(tls: ShadowTls | undefined) {
    this.files = tls ? { ca: readFileSync(tls.ca), cert: readFileSync(tls.cert), key: readFileSync(tls.key) } : undefined;
  }

  server(): ServerCredentials {
    const f = this.files;
    return f ? ServerCredentials.createSsl(f.ca, [{ cert_chain: f.cert, private_key: f.key }], true) : ServerCredentials.createInsecure();
  }

  /** For a call to `peerId`: its certificate must name it (whatever host or IP its address has). */
  client(peerId: string): ChannelCredentials {
    const f = this.files;
    if (!f) return credentials.createInsecure();
    return credentials.createSsl(f.ca, f.key, f.cert, {
      checkServerIdentity: (_host, cert) => (certificateNames(cert).includes(peerId) ? undefined : new Error(`the shadow peer's certificate does not name ${peerId}`)),
    });
  }

  /** Whether a call's client certificate names `agentId` (always true without TLS: the credential decides). */
  names(cert: PeerCertificate | undefined, agentId: string): boolean {
    return !this.files || certificateNames(cert).includes(agentId);
  }
}
