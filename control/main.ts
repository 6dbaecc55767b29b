import { controllerConfigSchema, loadConfigFile } from '../shared/config.js';
import { createLogger } from '../shared/logger.js';
import { Controller } from './controller.js';

/** `mxswitch controller --config FILE`: runs until SIGTERM/SIGINT (graceful: operations resume at the next start). */
export async function runController(configFile: string): Promise<void> {
  const config = loadConfigFile(controllerConfigSchema, configFile);
  const log = createLogger('controller', config.log.level);
  const controller = new Controller(config, log);
  await controller.start();
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'controller shutting down');
    controller.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'unclean shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}
