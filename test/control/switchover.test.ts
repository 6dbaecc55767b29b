import { grpcTransport } from '../helpers/transport.js';
import { switchoverScenarios } from './switchover-scenarios.js';

switchoverScenarios(() => grpcTransport);
