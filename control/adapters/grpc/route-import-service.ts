import type { sendUnaryData, ServerReadableStream } from '@grpc/grpc-js';
import type { Logger } from '../../../shared/logger.js';
import { routeFromWire } from '../../../shared/wire.js';
import type { AdminServiceServer, ImportRoutesRequest, ImportRoutesResponse } from '../../../proto/gen/mxswitch/v1/admin.js';
import type { Route as RouteMsg } from '../../../proto/gen/mxswitch/v1/agent.js';
import type { RouteStoreApi } from '../../core/ports.js';
import type { Route } from '../../../shared/routes.js';
import type { Registry } from '../../core/registry.js';
import { refuseSelfTarget } from '../../core/self-loop.js';
import type { AdminCalls } from './admin-calls.js';
import { collectImport } from './client-stream.js';
import { unauthenticated } from './grpc-util.js';

/** Routes in one import at most (a staged migration of a large ISP; the table itself has no limit). */
const MAX_IMPORT = 1_000_000;

/** `route import`: the chunks of a transport map, applied in one version at the end (nothing on an error). */
export function routeImportHandler(store: RouteStoreApi, registry: Registry, { authorized, actor: callerActor }: AdminCalls, log: Logger): Pick<AdminServiceServer, 'importRoutes'> {
  return {
    importRoutes(call: ServerReadableStream<ImportRoutesRequest, ImportRoutesResponse>, callback: sendUnaryData<ImportRoutesResponse>): void {
      if (!authorized(call, 'ImportRoutes')) return callback(unauthenticated('admin'));
      collectImport<ImportRoutesRequest, RouteMsg, ImportRoutesResponse>(call, callback, {
        what: 'routes',
        max: MAX_IMPORT,
        items: (chunk) => chunk.routes,
        log,
        finish: async (head, wire) => {
          const routes: Route[] = wire.map(routeFromWire);
          // Per distinct target: an import has many routes and few targets.
          const agents = registry.list();
          for (const target of new Set(routes.map((r) => r.target))) refuseSelfTarget(target, agents);
          const actor = callerActor(call);
          const result = await store.importRoutes(routes, { replace: head?.replace ?? false, dryRun: head?.dryRun ?? false, expectedVersion: head?.expectedVersion ?? 0, actor });
          log.info({ routes: routes.length, replace: head?.replace, ...result, actor }, result.dryRun ? 'route import checked (dry run)' : 'routes imported');
          return result;
        },
      });
    },
  };
}
