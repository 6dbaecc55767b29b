import { agentConfigSchema, loadConfigFile } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { Agent, type ControlChannelFactory } from './agent.js';
import { grpcControlChannel } from './control-grpc.js';

/** `mxswitch agent --config FILE`: runs until SIGTERM/SIGINT; SIGHUP reloads static routes from the file. */
export async function runAgent(configFile: string, controlFactory?: ControlChannelFactory): Promise<void> {
  const config = loadConfigFile(agentConfigSchema, configFile);
  const log = createLogger('agent', config.log.level).child({ agent: config.id });
  const agent = new Agent(config, log, controlFactory ?? (config.controller?.grpc ? grpcControlChannel : undefined));
  await agent.start();
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down: no new sessions, finishing the ones open');
    agent.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'unclean shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => {
    try {
      agent.reloadStaticRoutes(loadConfigFile(agentConfigSchema, configFile).routes);
    } catch (err) {
      log.error({ err }, 'config reload failed; the table in force is unchanged');
    }
  });
}
