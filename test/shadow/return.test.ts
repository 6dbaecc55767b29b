import { grpcTransport } from '../helpers/transport.js';
import { shadowLossScenarios } from './scenarios.js';

shadowLossScenarios(() => grpcTransport);
