import type { AgentConfig } from '../../shared/config.js';
import type { Logger } from '../../shared/logger.js';
import { MxResolver } from '../mx-resolver.js';
import { VerifyCache } from './cache.js';
import { Prober } from './prober.js';
import { RecipientVerifier } from './verifier.js';

/** The recipient verifier of an agent (cache in dataDir, probes with the agent's HELO name) and how to close it. */
export function createVerifier(config: AgentConfig, helo: string, log: Logger): { verifier: RecipientVerifier; close: () => void } {
  const v = config.verify;
  const cache = new VerifyCache(config.dataDir, { positiveMs: v.positiveTtl, negativeMs: v.negativeTtl });
  const mx = new MxResolver({ hostname: helo, ...(config.delivery.resolvers ? { resolvers: config.delivery.resolvers } : {}) });
  const prober = new Prober({ helo, timeoutMs: v.timeout, probesPerSecond: v.probesPerSecond, mx, log });
  return {
    verifier: new RecipientVerifier(cache, prober, { unreachable: v.unreachable }, log),
    close: () => {
      prober.close();
      cache.close();
    },
  };
}
