import { readFileSync } from 'node:fs';
import { hostname, userInfo } from 'node:os';
import {
  credentials,
  Metadata,
  status as GrpcStatus,
  type CallOptions,
  type ChannelCredentials,
  type ClientReadableStream,
  type ClientUnaryCall,
  type ServiceError,
} from '@grpc/grpc-js';
import { Command, Option } from 'commander';
import {
  AdminServiceClient,
  EditRecipientsRequest,
  FlushRequest,
  FollowRequest,
  GetOperationRequest,
  HoldRequest,
  ListAuditRequest,
  ListRecipientsRequest,
  ListRoutesRequest,
  QueueCommandRequest,
  ReleaseRequest,
  RemoveAgentRequest,
  RemoveRouteRequest,
  SetRouteRequest,
  StatusRequest,
  SwitchoverRequest,
  WatchRequest,
  type EditRecipientsResponse,
  type FollowResponse,
  type ImportRecipientsResponse,
  type ListAuditResponse,
  type ListRecipientsResponse,
  type GetOperationResponse,
  type ListRoutesResponse,
  type QueueCommandResponse,
  type RemoveAgentResponse,
  type RemoveRouteResponse,
  type SetRouteResponse,
  type StatusResponse,
  type WatchResponse,
} from '../../proto/gen/mxswitch/v1/admin.js';
import { errorMessage, MxError, UsageError } from '../../shared/errors.js';
import { parseHostPort } from '../../shared/units.js';

// The message types the commands render: the generated code stays behind this module.
export type { AgentCommandResult, AgentStatus, AuditEntry, Operation, OperationProgress, StatusResponse, WatchResponse } from '../../proto/gen/mxswitch/v1/admin.js';

/** How an operator command reaches the controller (flags and their environment variables). */
export interface ConnectionOptions {
  controller?: string;
  tokenFile?: string;
  ca?: string;
  cert?: string;
  key?: string;
}

export const DEFAULT_CONTROLLER = '127.0.0.1:7070';
/** Deadline of every unary call; streams are bounded by the operation's own --timeout instead. */
export const UNARY_DEADLINE_MS = 20_000;

/** A failure reported by (or on the way to) the controller: exit status 1, one line. */
export class ControllerError extends MxError {
  constructor(
    message: string,
    readonly grpcCode?: number,
  ) {
    super('CONTROLLER', message);
    this.name = 'ControllerError';
  }
}

/** The connection flags every operator command takes; the token never comes from the command line (it would show in ps). */
export function addConnectionOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--controller <host:port>', 'controller admin address').env('MXSWITCH_CONTROLLER').default(DEFAULT_CONTROLLER))
    .addOption(new Option('--token-file <file>', 'read the admin token from this file (default: env MXSWITCH_TOKEN)').env('MXSWITCH_TOKEN_FILE'))
    .addOption(new Option('--ca <file>', 'CA certificate: use TLS and verify the controller with it').env('MXSWITCH_CA'))
    .addOption(new Option('--cert <file>', 'client certificate for mutual TLS (with --key and --ca)').env('MXSWITCH_CERT'))
    .addOption(new Option('--key <file>', 'client private key for mutual TLS (with --cert and --ca)').env('MXSWITCH_KEY'))
    .addOption(new Option('--json', 'machine-readable output on stdout'));
}

export const CONNECTION_HELP = `Connection: --controller HOST:PORT (env MXSWITCH_CONTROLLER, default ${DEFAULT_CONTROLLER}); the admin token comes from env MXSWITCH_TOKEN or --token-file FILE, never from the command line; --ca FILE turns on TLS, --cert/--key add a client certificate (mutual TLS).`;

function readFileArg(flag: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new UsageError(`${flag} ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : errorMessage(err)}`);
  }
}

/** The admin token: --token-file wins over MXSWITCH_TOKEN; undefined when neither is set (the controller will say no). */
export function resolveToken(opts: ConnectionOptions, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (opts.tokenFile) {
    const token = readFileArg('--token-file', opts.tokenFile).toString('utf8').trim();
    if (!token) throw new UsageError(`--token-file ${opts.tokenFile}: file is empty`);
    if (/\s/.test(token)) throw new UsageError(`--token-file ${opts.tokenFile}: expected one token on one line`);
    return token;
  }
  const token = env.MXSWITCH_TOKEN?.trim();
  return token ? token : undefined;
}

/**
 * grpc-js sets the TLS ServerName to the target host, and Node warns (DEP0123) when that is an IP address, which
 * is a normal way to reach a controller whose certificate has an IP SAN. The warning would break the one-line
 * stderr contract, so only that one is dropped.
 */
function silenceIpServernameWarning(): void {
  const original = process.emitWarning.bind(process) as (...args: unknown[]) => void;
  process.emitWarning = ((...args: unknown[]) => {
    const [, typeOrOptions, code] = args;
    if (code === 'DEP0123' || (typeof typeOrOptions === 'object' && (typeOrOptions as { code?: string } | null)?.code === 'DEP0123')) return;
    original(...args);
  }) as typeof process.emitWarning;
}

export function channelCredentials(opts: ConnectionOptions): ChannelCredentials {
  if ((opts.cert === undefined) !== (opts.key === undefined)) throw new UsageError('--cert and --key go together (mutual TLS)');
  if (!opts.ca) {
    if (opts.cert) throw new UsageError('--cert/--key need --ca (mutual TLS runs over TLS)');
    return credentials.createInsecure();
  }
  const ca = readFileArg('--ca', opts.ca);
  silenceIpServernameWarning();
  const key = opts.key ? readFileArg('--key', opts.key) : null;
  const cert = opts.cert ? readFileArg('--cert', opts.cert) : null;
  return credentials.createSsl(ca, key, cert);
}

/** Who made a change, for the controller's audit log. */
export function actor(): string {
  let user = process.env.USER ?? 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry (containers): keep $USER
  }
  return `${user}@${hostname()}`;
}

/** The coordinated operations; switchover's request adds `target` and `waitDrained`. */
export type OperationKind = 'hold' | 'release' | 'switchover' | 'flush';
/** What a queue command asks the agents to do (list, show, remove, retry). */
export type QueueCommandKind = NonNullable<QueueCommandRequest['kind']>;

type Callback<Res> = (err: ServiceError | null, res: Res) => void;
type UnaryInvoke<Res> = (md: Metadata, opts: Partial<CallOptions>, cb: Callback<Res>) => ClientUnaryCall;

function isServiceError(err: unknown): err is ServiceError {
  return typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'number' && 'details' in err;
}

/** The one-line message for a gRPC failure; INVALID_ARGUMENT becomes a usage error (exit 2), everything else exit 1. */
export function mapGrpcError(err: unknown, address: string, tls = true): MxError {
  if (!isServiceError(err)) return err instanceof MxError ? err : new ControllerError(errorMessage(err));
  const details = (err.details || err.message || '')
    .replace(/\s+/g, ' ')
    .trim()
    .replace(/^No connection established\. Last error: (Error: )?/, '')
    .replace(/\.? ?Resolution note:$/, '')
    .replace(/ \(\d{4}-\d\d-\d\dT[\d:.]+Z\)$/, '')
    .replace(/^[0-9A-F]+:error:[0-9A-F]+:SSL routines:[^:]*:([^:]+):.*$/, 'TLS handshake failed: $1');
  switch (err.code) {
    case GrpcStatus.UNAVAILABLE: {
      const hint = /certificate required/.test(details)
        ? ' (the controller requires a client certificate: --cert/--key)'
        : !tls && /^Failed to connect/.test(details)
          ? ' (if the controller uses TLS, give --ca FILE)'
          : '';
      return new ControllerError(`cannot reach controller at ${address}: ${details || 'unavailable'}${hint}`, err.code);
    }
    case GrpcStatus.UNAUTHENTICATED:
      return new ControllerError('controller refused the token (set MXSWITCH_TOKEN or --token-file)', err.code);
    case GrpcStatus.PERMISSION_DENIED:
      return new ControllerError(`controller refused the token: ${details || 'permission denied'}`, err.code);
    case GrpcStatus.INVALID_ARGUMENT:
      return new UsageError(details || 'the controller rejected the arguments');
    case GrpcStatus.FAILED_PRECONDITION:
    case GrpcStatus.ABORTED:
    case GrpcStatus.NOT_FOUND:
    case GrpcStatus.ALREADY_EXISTS:
      return new ControllerError(details || GrpcStatus[err.code]!, err.code);
    case GrpcStatus.DEADLINE_EXCEEDED:
      return new ControllerError(`controller at ${address} did not answer in time (${details || 'deadline exceeded'})`, err.code);
    case GrpcStatus.CANCELLED:
      return new ControllerError(`call to controller at ${address} cancelled${details ? `: ${details}` : ''}`, err.code);
    default:
      return new ControllerError(`controller at ${address} failed (${GrpcStatus[err.code] ?? err.code}): ${details}`, err.code);
  }
}

/** A connected AdminService client: bearer token on every call, deadline on unary calls, errors as one-liners. */
export class AdminConnection {
  readonly address: string;
  readonly client: AdminServiceClient;
  private readonly token: string | undefined;
  private readonly tls: boolean;
  private readonly deadlineMs: number;

  /**
   * `opts` as the CLI's flags give them; `embedded` for a program that holds the token and credentials itself
   * (the demo, the tests) instead of files and MXSWITCH_TOKEN.
   */
  constructor(opts: ConnectionOptions, embedded: { deadlineMs?: number; token?: string; credentials?: ChannelCredentials } = {}) {
    this.deadlineMs = embedded.deadlineMs ?? UNARY_DEADLINE_MS;
    const address = opts.controller ?? DEFAULT_CONTROLLER;
    try {
      parseHostPort(address);
    } catch {
      throw new UsageError(`--controller ${address}: expected HOST:PORT`);
    }
    this.address = address;
    this.token = embedded.token ?? resolveToken(opts);
    this.tls = Boolean(opts.ca) || (embedded.credentials?._isSecure() ?? false);
    this.client = new AdminServiceClient(address, embedded.credentials ?? channelCredentials(opts), {
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
    });
  }

  metadata(): Metadata {
    const md = new Metadata();
    if (this.token) md.set('authorization', `Bearer ${this.token}`);
    return md;
  }

  close(): void {
    this.client.close();
  }

  private unary<Res>(invoke: UnaryInvoke<Res>, deadlineMs = this.deadlineMs): Promise<Res> {
    return new Promise((resolve, reject) => {
      invoke(this.metadata(), { deadline: Date.now() + deadlineMs }, (err, res) => {
        if (err) reject(mapGrpcError(err, this.address, this.tls));
        else resolve(res);
      });
    });
  }

  /** Opens a server stream; `deadlineMs` bounds the whole stream (undefined: no deadline). */
  openStream<T>(open: (md: Metadata, opts: Partial<CallOptions>) => ClientReadableStream<T>, deadlineMs?: number): ClientReadableStream<T> {
    return open(this.metadata(), deadlineMs === undefined ? {} : { deadline: Date.now() + deadlineMs });
  }

  /** Iterates a server stream, turning its error into a one-line MxError. */
  async *iterate<T>(stream: ClientReadableStream<T>): AsyncGenerator<T> {
    try {
      for await (const item of stream as AsyncIterable<T>) yield item;
    } catch (err) {
      throw mapGrpcError(err, this.address, this.tls);
    }
  }

  listRoutes(): Promise<ListRoutesResponse> {
    return this.unary((md, o, cb) => this.client.listRoutes(ListRoutesRequest.fromPartial({}), md, o, cb));
  }
  setRoute(req: Partial<SetRouteRequest>): Promise<SetRouteResponse> {
    return this.unary((md, o, cb) => this.client.setRoute(SetRouteRequest.fromPartial(req), md, o, cb));
  }
  removeRoute(req: Partial<RemoveRouteRequest>): Promise<RemoveRouteResponse> {
    return this.unary((md, o, cb) => this.client.removeRoute(RemoveRouteRequest.fromPartial(req), md, o, cb));
  }
  status(): Promise<StatusResponse> {
    return this.unary((md, o, cb) => this.client.status(StatusRequest.fromPartial({}), md, o, cb));
  }
  removeAgent(id: string): Promise<RemoveAgentResponse> {
    return this.unary((md, o, cb) => this.client.removeAgent(RemoveAgentRequest.fromPartial({ id }), md, o, cb));
  }
  getOperation(id: string): Promise<GetOperationResponse> {
    return this.unary((md, o, cb) => this.client.getOperation(GetOperationRequest.fromPartial({ id }), md, o, cb));
  }
  /** A queue command waits for agents: the deadline covers the agents' timeout plus a margin. */
  queueCommand(req: Partial<QueueCommandRequest>, timeoutMs: number): Promise<QueueCommandResponse> {
    return this.unary((md, o, cb) => this.client.queueCommand(QueueCommandRequest.fromPartial(req), md, o, cb), timeoutMs + this.deadlineMs);
  }
  /** Starts a coordinated operation; the stream carries its progress and is bounded by `deadlineMs` (undefined: no deadline). */
  startOperation(kind: OperationKind, req: Partial<SwitchoverRequest>, deadlineMs?: number): ClientReadableStream<FollowResponse> {
    return this.openStream<FollowResponse>((md, o) => {
      if (kind === 'hold') return this.client.hold(HoldRequest.fromPartial(req), md, o);
      if (kind === 'release') return this.client.release(ReleaseRequest.fromPartial(req), md, o);
      if (kind === 'flush') return this.client.flush(FlushRequest.fromPartial(req), md, o);
      return this.client.switchover(SwitchoverRequest.fromPartial(req), md, o);
    }, deadlineMs);
  }
  watch(): ClientReadableStream<WatchResponse> {
    return this.openStream((md, o) => this.client.watch(WatchRequest.fromPartial({}), md, o));
  }
  /** Sends a domain's list in chunks (one message each, under the controller's 4 MiB limit); applied at the end. */
  importRecipients(domain: string, addresses: readonly string[], replace: boolean, actor: string): Promise<ImportRecipientsResponse> {
    return new Promise((resolve, reject) => {
      const stream = this.client.importRecipients(this.metadata(), { deadline: Date.now() + this.deadlineMs * 3 }, (err, res) => {
        if (err) reject(mapGrpcError(err, this.address, this.tls));
        else resolve(res);
      });
      const CHUNK = 10_000;
      for (let i = 0; i === 0 || i < addresses.length; i += CHUNK) stream.write({ domain, replace, actor, addresses: addresses.slice(i, i + CHUNK) });
      stream.end();
    });
  }
  editRecipients(req: Partial<EditRecipientsRequest>): Promise<EditRecipientsResponse> {
    return this.unary((md, o, cb) => this.client.editRecipients(EditRecipientsRequest.fromPartial(req), md, o, cb));
  }
  listRecipients(req: Partial<ListRecipientsRequest>): Promise<ListRecipientsResponse> {
    return this.unary((md, o, cb) => this.client.listRecipients(ListRecipientsRequest.fromPartial(req), md, o, cb));
  }
  listAudit(limit: number): Promise<ListAuditResponse> {
    return this.unary((md, o, cb) => this.client.listAudit(ListAuditRequest.fromPartial({ limit }), md, o, cb));
  }
  follow(id: string): ClientReadableStream<FollowResponse> {
    return this.openStream((md, o) => this.client.follow(FollowRequest.fromPartial({ id }), md, o));
  }
}

/** Runs `fn` with a connection that is always closed afterwards (an open channel would keep the process alive). */
export async function withAdmin<T>(opts: ConnectionOptions, fn: (admin: AdminConnection) => Promise<T>): Promise<T> {
  const admin = new AdminConnection(opts);
  try {
    return await fn(admin);
  } finally {
    admin.close();
  }
}
