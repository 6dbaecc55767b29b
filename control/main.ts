import { controllerConfigSchema, loadConfigFile } from '../shared/config.js';
import { stopOnSignals } from '../shared/daemon.js';
import { createLogger } from '../shared/logger.js';
import { Controller } from './controller.js';

/** `mxswitch controller --config FILE`: runs until SIGTERM/SIGINT (graceful: operations resume at the next start). */
export async function runController(configFile: string): Promise<void> {
  const config = loadConfigFile(controllerConfigSchema, configFile);
  const log = createLogger('controller', config.log);
  const controller = new Controller(config, log);
  await controller.start();
  stopOnSignals(log, 'controller', () => controller.stop());
}
