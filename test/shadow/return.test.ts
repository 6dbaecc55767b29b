import { grpcTransport } from '../helpers/transport.js';
import { shadowReturnScenarios } from './scenarios.js';

shadowReturnScenarios(() => grpcTransport);
