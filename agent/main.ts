import { agentConfigSchema, loadConfigFile, type AgentConfig } from '../shared/config.js';
import { stopOnSignals } from '../shared/daemon.js';
import { createLogger } from '../shared/logger.js';
import { Agent, type ControlChannelFactory } from './agent.js';

/** The configured transport's channel, loaded only when used: gRPC and NATS clients cost ~1 s of start-up. */
async function controlChannelFor(config: AgentConfig): Promise<ControlChannelFactory | undefined> {
  if (config.controller?.grpc) return (await import('./control/grpc.js')).grpcControlChannel;
  if (config.controller?.nats) return (await import('./control/nats.js')).natsControlChannel;
  return undefined;
}

/** `mxswitch agent --config FILE`: runs until SIGTERM/SIGINT; SIGHUP reloads static routes from the file. */
export async function runAgent(configFile: string, controlFactory?: ControlChannelFactory): Promise<void> {
  const config = loadConfigFile(agentConfigSchema, configFile);
  const log = createLogger('agent', config.log).child({ agent: config.id });
  const agent = new Agent(config, log, controlFactory ?? (await controlChannelFor(config)));
  await agent.start();
  // Graceful: no new sessions, the open ones finish, sends in flight finish.
  stopOnSignals(log, 'agent', () => agent.stop());
  process.on('SIGHUP', () => {
    try {
      agent.reloadStaticRoutes(loadConfigFile(agentConfigSchema, configFile).routes);
    } catch (err) {
      log.error({ err }, 'config reload failed; the table in force is unchanged');
    }
  });
}
